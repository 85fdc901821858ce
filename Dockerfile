# confab as a container: the static musl binary (web app embedded), CA certificates and an empty
# state directory in an otherwise empty image, run as a non-root UID. See docs/self-hosting.md.
#
# Two targets put the same binary into the same image:
#
#   docker build -t confab .                      # target "source" (the default, last stage):
#                                                 # builds it here from node + rust images
#   docker build --target prebuilt -t confab .    # target "prebuilt": packages a binary built by
#                                                 # scripts/build-static.sh; pulls no image at all
#
# "prebuilt" reads dist/container/<TARGETARCH>/confab, dist/container/ca-certificates.crt and
# dist/container/empty/ from the build context: scripts/build-container.sh stages them (and builds
# with podman, buildah or docker). Multi-arch: docker buildx build --platform
# linux/amd64,linux/arm64 … (the builder stage cross-compiles; nothing runs under emulation).

# Builder images (only the "source" target pulls them); point them at a mirror if Docker Hub is out
# of reach.
ARG NODE_IMAGE=docker.io/library/node:22-bookworm-slim
ARG RUST_IMAGE=docker.io/library/rust:1-bookworm

# --- web app: web/dist and the livekit-client module that build.rs embeds --------------------
FROM --platform=$BUILDPLATFORM ${NODE_IMAGE} AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY web/ ./
RUN npm run --silent build

# --- the binary, built from source for TARGETARCH -------------------------------------------
FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS binary-source
ARG TARGETARCH
# The commit to stamp into `confab --version` (.git is not in the build context).
ARG CONFAB_GIT_SHA=unknown
ARG SOURCE_DATE_EPOCH=
WORKDIR /src
COPY . .
COPY --from=web /src/web/dist web/dist
COPY --from=web /src/web/node_modules web/node_modules
# build-static.sh installs the cross toolchain (Debian packages, rustup target) and checks the
# result is a static binary of the right architecture. An empty SOURCE_DATE_EPOCH is an error for
# gcc (mimalloc's C code), so it is unset when not given.
RUN case "$TARGETARCH" in \
        amd64) arch=x86_64 ;; \
        arm64) arch=aarch64 ;; \
        *) echo "unsupported TARGETARCH '$TARGETARCH' (amd64 or arm64)" >&2; exit 1 ;; \
    esac \
    && if [ -z "$SOURCE_DATE_EPOCH" ]; then unset SOURCE_DATE_EPOCH; fi \
    && { scripts/build-static.sh "$arch" > /tmp/build.log 2>&1 || { cat /tmp/build.log; exit 1; }; } \
    && tail -n 6 /tmp/build.log \
    && mkdir -p /out/data \
    && cp "$(tail -n 1 /tmp/build.log)" /out/confab \
    && cp /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt

# --- what both images are, without the files ----------------------------------------------
FROM scratch AS runtime
ARG VERSION=dev
LABEL org.opencontainers.image.title="confab" \
      org.opencontainers.image.description="Self-hosted, LiveKit-compatible video conferencing in one binary" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later"
USER 65532:65532
# Containers are never appliances: no A/B slots, no update agent. Everything else is the
# documented default and can be overridden with the same variables (docs/configuration.md).
ENV CONFAB_STATE_DIR=/data \
    CONFAB_BOOTLOADER=none
# HTTPS + WebSocket signalling, plain-HTTP redirect and /ca.crt, ICE-TCP, media: one ICE-TCP and
# one UDP port per media thread (CONFAB_MEDIA_THREADS, default one per core: 7881 + i, 7882 + i);
# listed here for the first thread; TURN over UDP and TLS. The compose files use host networking.
EXPOSE 7880/tcp 7879/tcp 7881/tcp 7882/udp 3478/udp 5349/tcp
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["/usr/bin/confab", "health", "--quiet", "--timeout", "8"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/confab"]
CMD ["serve"]

# --- target "prebuilt": binary and CA bundle staged by scripts/build-container.sh -----------
FROM runtime AS prebuilt
ARG TARGETARCH
COPY dist/container/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY dist/container/${TARGETARCH}/confab /usr/bin/confab
# The state directory belongs to the runtime user, so a fresh named volume does too (Docker and
# Podman copy the image's directory, owner included, into an empty volume).
COPY --chown=65532:65532 dist/container/empty/ /data/
VOLUME ["/data"]
WORKDIR /data

# --- target "source" (default): binary and CA bundle from the builder stage ----------------
FROM runtime AS source
COPY --from=binary-source /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=binary-source /out/confab /usr/bin/confab
COPY --from=binary-source --chown=65532:65532 /out/data /data
VOLUME ["/data"]
WORKDIR /data
