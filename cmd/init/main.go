// Command init is ovroot's /init: PID 1 of the initramfs. See package boot.
package main

import "github.com/ovroot/ovroot/boot"

func main() { boot.Main() }
