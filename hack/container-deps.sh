#!/usr/bin/env bash
# Install the Debian packages that build the Kagent image and run a real node, when missing:
#   mmdebstrap                   the image's root file system (make image)
#   podman                       loads and runs the built image (make image, the image tests)
#   containerd, runc             the real node's container runtime (runc: crun refuses cgroup v1
#                                hybrid layouts)
#   containernetworking-plugins  the real node's pod network (bridge, host-local, portmap)
#   iptables, conntrack          kube-proxy's Service rules
#   iproute2, gcc                the node's interfaces; the pause program of the pod sandbox
#   binutils                     strips the image's native extensions
# kubelet, kube-proxy and CoreDNS are built with Go by kagent.local.binaries (`make node-binaries`).
set -euo pipefail
. "$(dirname "$0")/apt.sh"

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have mmdebstrap || need+=(mmdebstrap)
have podman || need+=(podman)
have containerd || need+=(containerd)
have runc || need+=(runc)
[ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || need+=(containernetworking-plugins)
have iptables || need+=(iptables)
have conntrack || need+=(conntrack)
have ip || need+=(iproute2)
have gcc || need+=(gcc libc6-dev)
have strip || need+=(binutils)

apt_install --no-install-recommends ${need[@]+"${need[@]}"}
