package qemu

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/layout"
)

func TestArgs(t *testing.T) {
	c := Config{Arch: layout.ARM64, Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyAMA0 panic=-1",
		Disks: []string{"/a.img", "/odd,name.img"}, ReadOnlyDisks: []string{"/u.bundle"}, QMP: "/tmp/q.sock"}
	bin, args, err := c.Args()
	if err != nil {
		t.Fatal(err)
	}
	got := bin + " " + strings.Join(args, " ")
	want := "qemu-system-aarch64 -M virt -cpu cortex-a57 -accel tcg -m 512 -smp 1 -nodefaults -no-reboot -display none " +
		"-serial stdio -monitor none -kernel /k -initrd /i -append console=ttyAMA0 panic=-1 " +
		"-drive if=none,id=d0,file=/a.img,format=raw -device virtio-blk-pci,drive=d0 " +
		"-drive if=none,id=d1,file=/odd,,name.img,format=raw -device virtio-blk-pci,drive=d1 " +
		"-drive if=none,id=d2,file=/u.bundle,format=raw,readonly=on -device virtio-blk-pci,drive=d2 " +
		"-qmp unix:/tmp/q.sock,server=on,wait=off"
	if got != want {
		t.Errorf("args:\n got %s\nwant %s", got, want)
	}
	c = Config{Arch: layout.X86_64, Interactive: true, MemoryMB: 1024, CPUs: 2, Accel: "kvm", Extra: []string{"-S"}}
	bin, args, _ = c.Args()
	got = bin + " " + strings.Join(args, " ")
	want = "qemu-system-x86_64 -M q35 -accel kvm -m 1024 -smp 2 -nodefaults -no-reboot -display none -serial mon:stdio -S"
	if got != want {
		t.Errorf("args:\n got %s\nwant %s", got, want)
	}
	// 32-bit ARM: highmem=off keeps the PCIe bridge below 4 GiB, where
	// Debian's armmp kernel (no LPAE) finds the virtio disk.
	c = Config{Arch: layout.ARM, Kernel: "/k", Disks: []string{"/a.img"}}
	bin, args, _ = c.Args()
	got = bin + " " + strings.Join(args, " ")
	want = "qemu-system-arm -M virt,highmem=off -cpu cortex-a15 -accel tcg -m 512 -smp 1 -nodefaults -no-reboot -display none " +
		"-serial stdio -monitor none -kernel /k -drive if=none,id=d0,file=/a.img,format=raw -device virtio-blk-pci,drive=d0"
	if got != want {
		t.Errorf("args:\n got %s\nwant %s", got, want)
	}
	for _, a := range layout.Arches {
		if _, _, err := (Config{Arch: a}).Args(); err != nil {
			t.Errorf("arch %s: %v", a, err)
		}
	}
	if _, _, err := (Config{Arch: "riscv"}).Args(); err == nil {
		t.Error("unknown arch accepted")
	}
	if cl := (Config{Arch: layout.X86_64, Cmdline: "a b", Kernel: "it's"}).CommandLine(); !strings.Contains(cl, `-kernel 'it'\''s' -append 'a b'`) {
		t.Errorf("CommandLine quoting: %s", cl)
	}
}

// fakeQEMU is a stand-in binary that behaves like a guest on a serial
// console: it prints in pieces, answers lines, powers off or hangs.
func fakeQEMU(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fake-qemu")
	script := `#!/bin/sh
printf 'booting\r\nhalf a '
sleep 0.3
printf 'line\r\n'
while read -r line; do
	case "$line" in
	poweroff) echo "bye"; exit 0;;
	crash) echo "oops"; exit 3;;
	hang) sleep 600;;
	*) echo "got: $line";;
	esac
done
`
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVM(t *testing.T) {
	var tee bytes.Buffer
	vm, err := Start(context.Background(), Config{Arch: layout.X86_64, Binary: fakeQEMU(t)}, Options{Console: &tee})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	// The whole line, although it arrives in two pieces.
	line, err := vm.Expect(5*time.Second, "half")
	if err != nil || line != "half a line" {
		t.Fatalf("Expect = %q, %v", line, err)
	}
	if err := vm.Send("hello"); err != nil {
		t.Fatal(err)
	}
	if m, err := vm.ExpectRegexp(5*time.Second, regexpMust(`got: (\w+)`)); err != nil || m[1] != "hello" {
		t.Fatalf("ExpectRegexp = %v, %v", m, err)
	}
	// Only output after the cursor counts.
	if _, err := vm.Expect(200*time.Millisecond, "booting"); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("matched text before the cursor: %v", err)
	}
	vm.Send("one")
	vm.Send("two")
	before, err := vm.ReadUntil(5*time.Second, "got: two")
	if err != nil || strings.TrimSpace(before) != "got: one" {
		t.Errorf("ReadUntil = %q, %v", before, err)
	}
	vm.Send("poweroff")
	if err := vm.Wait(5 * time.Second); err != nil {
		t.Errorf("Wait after a clean exit: %v", err)
	}
	if !vm.Exited() || !strings.Contains(vm.Console(), "bye") || !strings.Contains(tee.String(), "bye") {
		t.Errorf("console %q, tee %q", vm.Console(), tee.String())
	}
	if strings.Contains(vm.Console(), "\r") {
		t.Error("console keeps carriage returns")
	}
}

func TestVMFailures(t *testing.T) {
	bin := fakeQEMU(t)
	start := func() *VM {
		vm, err := Start(context.Background(), Config{Arch: layout.ARM64, Binary: bin}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return vm
	}
	// A guest that exits with an error: waiting fails at once, with the tail.
	vm := start()
	vm.Send("crash")
	if _, err := vm.Expect(30*time.Second, "never printed"); err == nil || !strings.Contains(err.Error(), "QEMU exited") || !strings.Contains(err.Error(), "oops") {
		t.Errorf("Expect on an exited VM: %v", err)
	}
	if err := vm.Wait(5 * time.Second); err == nil {
		t.Error("Wait: a non-zero exit is not an error")
	}
	// A hung guest: Wait kills it after its timeout; Kill is a power cut.
	vm = start()
	vm.Send("hang")
	if err := vm.Wait(300 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Wait on a hung guest: %v", err)
	}
	vm = start()
	vm.Kill()
	select {
	case <-vm.done:
	case <-time.After(5 * time.Second):
		t.Error("Kill did not stop the process")
	}
}

func TestRunTimeout(t *testing.T) {
	bin := fakeQEMU(t)
	var out bytes.Buffer
	err := Run(context.Background(), Config{Arch: layout.X86_64, Binary: bin}, strings.NewReader("hi\nhang\n"), &out, 500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "--timeout") {
		t.Errorf("Run with a hung guest: %v", err)
	}
	out.Reset()
	if err := Run(context.Background(), Config{Arch: layout.X86_64, Binary: bin}, strings.NewReader("hi\npoweroff\n"), &out, 10*time.Second); err != nil {
		t.Errorf("Run: %v", err)
	}
	if !strings.Contains(out.String(), "got: hi") {
		t.Errorf("Run output %q", out.String())
	}
}

func TestTailStripsTerminalControl(t *testing.T) {
	vm := &VM{}
	vm.buf.WriteString("ok line\n\x1b]10;?\x1b\\\x1b[6n\x1b[2K\x1b[1A\x1b[40m> prompt\x1b[0m\x07\n")
	if got := vm.Tail(5); got != "ok line\n> prompt?" {
		t.Errorf("Tail = %q", got)
	}
}
