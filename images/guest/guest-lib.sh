# Shared by /init, the DHCP script and the power-button handler of the slimvirt test guest
# (installed as /etc/slimvirt-guest.sh). Busybox ash.

# The kernel consoles (console=...), as init recorded them: markers go to every one of them,
# so a reader of the serial port sees them whatever order the console= arguments came in.
CONSOLES=$(cat /run/consoles 2>/dev/null)
: "${CONSOLES:=console}"

say() {
  for c in $CONSOLES; do
    echo "$*" >"/dev/$c"
  done 2>/dev/null
}

say_file() {
  for c in $CONSOLES; do
    cat "$1" >"/dev/$c"
    # Keep the next marker on a line of its own when the file lacks a final newline.
    [ -n "$(tail -c 1 "$1")" ] && echo >"/dev/$c"
  done 2>/dev/null
}

# nics lists the Ethernet interfaces, in name order.
nics() {
  for n in /sys/class/net/*; do
    n=${n##*/}
    [ "$n" = lo ] && continue
    [ "$(cat "/sys/class/net/$n/type" 2>/dev/null)" = 1 ] && echo "$n"
  done
}

# apply_hostname picks the hostname: cloud-init meta-data first, then the DHCP hostname of
# the first interface that got one, then the default; and refreshes the web page with it.
apply_hostname() {
  h=$(cat /run/meta-hostname 2>/dev/null)
  if [ -z "$h" ]; then
    for n in $(nics); do
      h=$(cat "/run/dhcp-hostname.$n" 2>/dev/null) && [ -n "$h" ] && break
    done
  fi
  : "${h:=slimvirt-guest}"
  hostname "$h"
  echo "$h" >/etc/hostname
  echo "slimvirt guest $h" >/www/index.html.tmp && mv /www/index.html.tmp /www/index.html
}

guest_halt() { # poweroff|reboot|halt
  case $1 in
    reboot) say "SLIMVIRT-GUEST-REBOOT" ;;
    *) say "SLIMVIRT-GUEST-POWEROFF" ;;
  esac
  sync
  "$1" -f
}
