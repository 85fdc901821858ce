# confab's A/B boot script for U-Boot (compiled to boot.scr with `mkimage -T script`).
#
# Boot counting in the U-Boot environment, as src/update/bootloader/uboot.rs writes it, kept
# in two copies on this partition (confab-uboot.env, confab-uboot-redund.env; each a U-Boot
# environment image: CRC32 + key=value entries, 0x4000 bytes). The copy with a good CRC and
# the higher CONFAB_ENV_SEQ is current. Then, in BOOT_ORDER: a slot without BOOT_<x>_LEFT is
# good and boots as it is; a slot with tries left has one taken (the current copy rewritten
# first) and boots; a slot with none left is skipped. No slot left: the last in BOOT_ORDER.
# The kernel is told which slot it runs from: root=PARTLABEL=root-<x>.

setenv confab_vars BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT CONFAB_A_STATE CONFAB_B_STATE CONFAB_A_VERSION CONFAB_B_VERSION CONFAB_ENV_SEQ
setenv confab_part ${devnum}:${distro_bootpart}
setenv confab_size 0x4000
setenv confab_seq0 none
setenv confab_seq1 none

# Copy 1 first, then copy 0; copy 1 again if it is the newer one.
# A copy must be whole (filesize is hex, as 0x4000 without its 0x) and pass its CRC.
if fatload ${devtype} ${confab_part} ${loadaddr} confab-uboot-redund.env; then
    if test "${filesize}" = 4000; then
        if env import -d -c ${loadaddr} ${confab_size} ${confab_vars}; then
            setenv confab_seq1 ${CONFAB_ENV_SEQ}
        fi
    fi
fi
if fatload ${devtype} ${confab_part} ${loadaddr} confab-uboot.env; then
    if test "${filesize}" = 4000; then
        if env import -d -c ${loadaddr} ${confab_size} ${confab_vars}; then
            setenv confab_seq0 ${CONFAB_ENV_SEQ}
        fi
    fi
fi
setenv confab_copy confab-uboot.env
setenv confab_take1 no
if test "${confab_seq1}" != none; then
    if test "${confab_seq0}" = none; then
        setenv confab_take1 yes
    elif test ${confab_seq1} -gt ${confab_seq0}; then
        setenv confab_take1 yes
    fi
fi
if test "${confab_take1}" = yes; then
    fatload ${devtype} ${confab_part} ${loadaddr} confab-uboot-redund.env
    env import -d -c ${loadaddr} ${confab_size} ${confab_vars}
    setenv confab_copy confab-uboot-redund.env
fi
if test "${confab_seq0}" = none; then
    if test "${confab_seq1}" = none; then
        echo "confab: no readable boot environment; booting slot A"
        setenv BOOT_ORDER A
        setenv confab_copy none
    fi
fi
echo "confab: environment ${confab_copy} (sequence ${CONFAB_ENV_SEQ}), BOOT_ORDER=${BOOT_ORDER}"

setenv confab_slot
for s in ${BOOT_ORDER}; do
    if test -z "${confab_slot}"; then
        if test "${s}" = A; then
            setenv confab_left ${BOOT_A_LEFT}
        else
            setenv confab_left ${BOOT_B_LEFT}
        fi
        if test -z "${confab_left}"; then
            setenv confab_slot ${s}
        elif test ${confab_left} -gt 0; then
            # setexpr answers in hex: the same digits below 10 (tries are at most 9).
            setexpr confab_left ${confab_left} - 1
            if test "${s}" = A; then
                setenv BOOT_A_LEFT ${confab_left}
            else
                setenv BOOT_B_LEFT ${confab_left}
            fi
            if test "${confab_copy}" != none; then
                env export -c -s ${confab_size} ${loadaddr} ${confab_vars}
                fatwrite ${devtype} ${confab_part} ${loadaddr} ${confab_copy} ${confab_size}
            fi
            setenv confab_slot ${s}
            echo "confab: slot ${s} on trial, ${confab_left} tries left after this one"
        else
            echo "confab: slot ${s} has no tries left; skipped"
        fi
    fi
done
if test -z "${confab_slot}"; then
    for s in ${BOOT_ORDER}; do
        setenv confab_slot ${s}
    done
    echo "confab: no slot has tries left; booting the last one, ${confab_slot}"
fi

if test "${confab_slot}" = B; then
    setenv confab_dir slot-b
    setenv confab_root root-b
else
    setenv confab_dir slot-a
    setenv confab_root root-a
fi
echo "confab: booting slot ${confab_slot}"
if test -z "${confab_console}"; then
    setenv confab_console console=ttyAMA0,115200
fi
setenv bootargs "${confab_console} root=PARTLABEL=${confab_root} ro rootwait"
if load ${devtype} ${confab_part} ${kernel_addr_r} ${confab_dir}/vmlinuz; then
    if load ${devtype} ${confab_part} ${ramdisk_addr_r} ${confab_dir}/initrd.img; then
        booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}
    fi
fi
echo "confab: slot ${confab_slot} did not boot (its kernel or initrd is missing or broken)"
