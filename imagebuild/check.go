package imagebuild

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/ovroot/ovroot/internal/kmod"
	"github.com/ovroot/ovroot/layout"
	"github.com/ulikunitz/xz/lzma"
)

// The checks here refuse, at build time, pieces that cannot boot together:
// a kernel, modules, an init or an e2fsck for another architecture or
// another kernel release. Each reads only what it needs from an
// io.ReaderAt and says what it found.

// KernelInfo is what a kernel image says about itself.
type KernelInfo struct {
	Arch    layout.Arch
	Format  string // "bzImage", "Image", "gzip-compressed Image", "EFI zboot", "zImage"
	Release string // "" when the image does not say where to find it
}

// Boot-image formats: Documentation/arch/x86/boot.rst ("The Real-Mode
// Kernel Header": "HdrS" at 0x202, the protocol version at 0x206,
// kernel_version at 0x20e, a pointer relative to 0x200) and
// Documentation/arch/arm64/booting.rst (the Image header: magic
// "ARM\x64" at 0x38) and Documentation/arch/arm/booting.rst (the zImage
// header: magic 0x016F2818 at 0x24, stored little-endian whatever the
// kernel's endianness, and an endianness flag at 0x30 that reads
// 0x04030201 for a little-endian kernel).
const (
	bzMagicOff      = 0x202
	bzVersionOff    = 0x206
	bzKernelVerOff  = 0x20e
	arm64MagicOff   = 0x38
	arm64HeaderSize = 0x40
	zMagicOff       = 0x24
	zEndianOff      = 0x30
	zHeaderSize     = 0x34
	zMagic          = 0x016F2818
	zBigEndian      = 0x01020304 // the flag of a big-endian (BE8) kernel, read little-endian
)

var (
	errEmpty     = errors.New("is empty")
	bzMagic      = []byte("HdrS")
	arm64Magic   = []byte("ARM\x64")
	linuxVersion = []byte("Linux version ")
)

// ReadKernel identifies a kernel image: an x86 bzImage, an arm64 Image
// (plain, gzip-compressed as Debian ships it, or an EFI zboot image), or a
// 32-bit ARM zImage.
func ReadKernel(r io.ReaderAt, size int64) (*KernelInfo, error) {
	if size == 0 {
		return nil, errEmpty
	}
	head := make([]byte, 0x1000)
	n, err := r.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return nil, err
	}
	head = head[:n]
	switch {
	case len(head) >= zHeaderSize && binary.LittleEndian.Uint32(head[zMagicOff:]) == zMagic:
		// Checked before "MZ": an ARM zImage with the EFI stub starts
		// with "MZ" too.
		if binary.LittleEndian.Uint32(head[zEndianOff:]) == zBigEndian {
			return nil, errors.New("is a big-endian ARM zImage; ovroot's arm is little-endian armhf (Debian's linux-image-armmp)")
		}
		return &KernelInfo{Arch: layout.ARM, Format: "zImage", Release: zImageRelease(r, size)}, nil
	case len(head) > bzKernelVerOff+2 && bytes.Equal(head[bzMagicOff:bzMagicOff+4], bzMagic):
		ki := &KernelInfo{Arch: layout.X86_64, Format: "bzImage"}
		// kernel_version exists from boot protocol 2.00 on.
		if binary.LittleEndian.Uint16(head[bzVersionOff:]) >= 0x200 {
			if off := int64(binary.LittleEndian.Uint16(head[bzKernelVerOff:])); off != 0 {
				buf := make([]byte, 256)
				m, _ := r.ReadAt(buf, 0x200+off)
				ki.Release = firstField(buf[:m])
			}
		}
		return ki, nil
	case len(head) >= arm64HeaderSize && bytes.Equal(head[arm64MagicOff:arm64MagicOff+4], arm64Magic):
		return &KernelInfo{Arch: layout.ARM64, Format: "Image", Release: findRelease(io.NewSectionReader(r, 0, size))}, nil
	case bytes.HasPrefix(head, gzipMagic):
		gz, err := gzip.NewReader(io.NewSectionReader(r, 0, size))
		if err != nil {
			return nil, fmt.Errorf("is gzip-compressed but unreadable: %w", err)
		}
		br := bufio.NewReaderSize(gz, 1<<16)
		h, _ := br.Peek(arm64HeaderSize)
		if len(h) == arm64HeaderSize && bytes.Equal(h[arm64MagicOff:arm64MagicOff+4], arm64Magic) {
			return &KernelInfo{Arch: layout.ARM64, Format: "gzip-compressed Image", Release: findRelease(br)}, nil
		}
		return nil, errors.New("is gzip-compressed but holds no arm64 Image (no \"ARM\\x64\" magic at 0x38)")
	case len(head) >= 0x40 && bytes.HasPrefix(head, []byte("MZ")) && string(head[4:8]) == "zimg":
		// EFI zboot (drivers/firmware/efi/libstub/zboot-header.S): a PE
		// image whose machine says the architecture.
		pe := int(binary.LittleEndian.Uint32(head[0x3c:]))
		if pe+6 <= len(head) && string(head[pe:pe+4]) == "PE\x00\x00" {
			switch binary.LittleEndian.Uint16(head[pe+4:]) {
			case 0xaa64:
				return &KernelInfo{Arch: layout.ARM64, Format: "EFI zboot"}, nil
			case 0x8664:
				return &KernelInfo{Arch: layout.X86_64, Format: "EFI zboot"}, nil
			}
		}
		return nil, errors.New("is an EFI zboot image for an architecture ovroot does not build")
	case bytes.HasPrefix(head, []byte(elf.ELFMAG)):
		return nil, errors.New("is an ELF file (vmlinux?), not a bootable kernel image; give the bzImage (x86_64), Image (arm64) or zImage (arm), e.g. /boot/vmlinuz-<release>")
	}
	return nil, errors.New("is not a Linux kernel image (no bzImage \"HdrS\" at 0x202, no arm64 Image \"ARM\\x64\" at 0x38, no ARM zImage magic 0x016F2818 at 0x24, not gzip)")
}

// kernelWanted says what kernel image each arch boots, for errors.
var kernelWanted = map[layout.Arch]string{
	layout.X86_64: "an x86 bzImage, e.g. Debian's linux-image-amd64",
	layout.ARM64:  "an arm64 Image, e.g. Debian's linux-image-arm64",
	layout.ARM:    "a 32-bit ARM zImage, e.g. Debian's linux-image-armmp",
}

// zImageRelease finds the release in a zImage's compressed kernel: the
// decompressor is followed by the payload (arch/arm/boot/compressed/
// piggy.S), gzip or xz (Debian's armmp); each candidate magic in the first
// MiB is tried. "" when none holds the banner (lzo, lz4, lzma payloads:
// CheckModules then compares the modules' vermagic among themselves).
func zImageRelease(r io.ReaderAt, size int64) string {
	const window = 1 << 20
	head := make([]byte, min(size, window))
	n, _ := r.ReadAt(head, 0)
	head = head[:n]
	tries := 0
	for off := 0; off < len(head) && tries < 8; off++ {
		var open func(io.Reader) (io.Reader, error)
		switch {
		case bytes.HasPrefix(head[off:], []byte{0x1f, 0x8b, 0x08}):
			open = func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }
		case bytes.HasPrefix(head[off:], xzMagic):
			open = xzLZMA2
		default:
			continue
		}
		tries++
		d, err := open(io.NewSectionReader(r, int64(off), size-int64(off)))
		if err != nil {
			continue
		}
		if rel := findRelease(d); rel != "" {
			return rel
		}
	}
	return ""
}

// xzLZMA2 reads the first block of the xz stream in r (the .xz file
// format, sections 2.1.1 and 3.1) as LZMA2, without undoing the filters
// before it. The kernel's xz_wrap.sh compresses an ARM zImage with the ARM
// BCJ filter, which the xz package does not decode; BCJ rewrites only
// branch instructions (4-byte words whose top byte is 0xEB), so text such
// as the banner comes out as it went in.
func xzLZMA2(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	stream := make([]byte, 12) // magic, flags, CRC32
	if _, err := io.ReadFull(br, stream); err != nil || !bytes.HasPrefix(stream, xzMagic) {
		return nil, errors.New("no xz stream header")
	}
	size, err := br.ReadByte()
	if err != nil || size == 0 { // 0 starts the index: no block
		return nil, errors.New("no xz block")
	}
	p := make([]byte, int(size)*4+3) // the header is (size+1)*4 bytes, size byte included
	if _, err := io.ReadFull(br, p); err != nil {
		return nil, err
	}
	flags := p[0]
	p = p[1:]
	varint := func() (uint64, error) { // multibyte integer: 7 bits a byte, at most 9
		var v uint64
		for i := 0; i < 9 && len(p) > 0; i++ {
			b := p[0]
			p = p[1:]
			v |= uint64(b&0x7f) << (7 * i)
			if b&0x80 == 0 {
				return v, nil
			}
		}
		return 0, errors.New("bad xz block header")
	}
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} { // compressed, uncompressed size
		if present {
			if _, err := varint(); err != nil {
				return nil, err
			}
		}
	}
	var id, dictProp uint64
	for range int(flags&3) + 1 {
		if id, err = varint(); err != nil {
			return nil, err
		}
		n, err := varint()
		if err != nil || n > uint64(len(p)) {
			return nil, errors.New("bad xz filter flags")
		}
		if id == 0x21 && n == 1 {
			dictProp = uint64(p[0])
		}
		p = p[n:]
	}
	if id != 0x21 || dictProp > 40 {
		return nil, errors.New("xz block does not end in LZMA2")
	}
	dict := int64(2|dictProp&1) << (dictProp/2 + 11)
	dict = max(min(dict, lzma.MaxDictCap), lzma.MinDictCap)
	return lzma.Reader2Config{DictCap: int(dict)}.NewReader2(br)
}

// CheckKernel reads the kernel at p and refuses one that is not a kernel
// for arch. It returns what it found.
func CheckKernel(p string, arch layout.Arch) (*KernelInfo, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("kernel %s is not a regular file", p)
	}
	ki, err := ReadKernel(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("kernel %s %w", p, err)
	}
	if ki.Arch != arch {
		return nil, fmt.Errorf("kernel %s is an %s %s, not a kernel for %s (want %s)", p, ki.Arch, ki.Format, arch, kernelWanted[arch])
	}
	return ki, nil
}

// firstField is the first word of a NUL-terminated string ("6.1.0-56-amd64
// (debian-kernel@...) #1 SMP ..." gives the release).
func firstField(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if f := strings.Fields(string(b)); len(f) > 0 && isRelease(f[0]) {
		return f[0]
	}
	return ""
}

func isRelease(s string) bool {
	if s == "" || s[0] < '0' || s[0] > '9' || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// findRelease looks for the kernel's banner ("Linux version <release> ...",
// init/version.c) in the first 128 MiB of an uncompressed image.
func findRelease(r io.Reader) string {
	br := bufio.NewReaderSize(io.LimitReader(r, 128<<20), 1<<16)
	buf := make([]byte, 0, 1<<17)
	for {
		chunk := make([]byte, 1<<16)
		n, err := io.ReadFull(br, chunk)
		buf = append(buf, chunk[:n]...)
		for {
			i := bytes.Index(buf, linuxVersion)
			if i < 0 {
				break
			}
			rest := buf[i+len(linuxVersion):]
			if end := bytes.IndexAny(rest, " \x00"); end > 0 {
				if rel := string(rest[:end]); isRelease(rel) {
					return rel
				}
				buf = rest
				continue
			}
			break // the banner runs into the next chunk
		}
		if err != nil {
			return ""
		}
		// Keep a tail long enough to hold a banner cut in two.
		if len(buf) > 128 {
			buf = append(buf[:0], buf[len(buf)-128:]...)
		}
	}
}

// elfMachines are the ELF machines of each arch.
var elfMachines = map[layout.Arch]elf.Machine{layout.X86_64: elf.EM_X86_64, layout.ARM64: elf.EM_AARCH64, layout.ARM: elf.EM_ARM}

// elfClasses are the ELF classes of each arch: 32-bit ARM's programs and
// modules are ELFCLASS32.
var elfClasses = map[layout.Arch]elf.Class{layout.X86_64: elf.ELFCLASS64, layout.ARM64: elf.ELFCLASS64, layout.ARM: elf.ELFCLASS32}

func machineArch(m elf.Machine) string {
	for a, em := range elfMachines {
		if em == m {
			return string(a)
		}
	}
	return strings.TrimPrefix(m.String(), "EM_")
}

// CheckStaticELF refuses a program that cannot run as the initramfs's
// /init or /sbin/e2fsck on arch: not an ELF executable, another machine,
// or dynamically linked (an initramfs carries no loader or libraries).
func CheckStaticELF(r io.ReaderAt, arch layout.Arch) error {
	f, err := elf.NewFile(r)
	if err != nil {
		return errors.New("is not an ELF executable")
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("is an ELF %s, not an executable", f.Type)
	}
	if f.Machine != elfMachines[arch] || f.Class != elfClasses[arch] {
		return fmt.Errorf("is an executable for %s (%s), not for %s", machineArch(f.Machine), f.Class, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp, _ := io.ReadAll(io.LimitReader(p.Open(), 256))
			return fmt.Errorf("is dynamically linked (interpreter %s); the initramfs has no libraries: build it static", strings.TrimRight(string(interp), "\x00"))
		}
	}
	return nil
}

func checkStaticFile(what, p string, arch layout.Arch) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	if err := CheckStaticELF(f, arch); err != nil {
		return fmt.Errorf("%s %s %w", what, p, err)
	}
	return nil
}

// CheckModules refuses a modules directory whose modules (those names
// bring in) are for another machine or another kernel release than the
// kernel's (when the kernel says; else they must agree among themselves).
func CheckModules(dir string, names []string, arch layout.Arch, kernelRelease string) error {
	if dir == "" {
		return nil
	}
	ix, err := kmod.LoadIndex(dir)
	if err != nil {
		return err
	}
	return checkModules(ix, dir, names, arch, kernelRelease)
}

// checkModules is CheckModules on an index already loaded.
func checkModules(ix *kmod.Index, dir string, names []string, arch layout.Arch, kernelRelease string) error {
	mods, err := ix.Closure(names...)
	if err != nil {
		return fmt.Errorf("modules in %s: %w", dir, err)
	}
	release, from := kernelRelease, "the kernel"
	for _, m := range mods {
		p := filepath.Join(dir, filepath.FromSlash(m.Path))
		f, err := elf.Open(p)
		if err != nil {
			return fmt.Errorf("module %s: %w", p, err)
		}
		machine := f.Machine
		f.Close()
		if machine != elfMachines[arch] {
			return fmt.Errorf("module %s is built for %s, not %s", p, machineArch(machine), arch)
		}
		switch {
		case m.Release == "":
		case release == "":
			release, from = m.Release, "module "+m.Name
		case m.Release != release:
			return fmt.Errorf("module %s is built for kernel %s (vermagic), but %s is %s", p, m.Release, from, release)
		}
	}
	return nil
}

// RootfsHas reports whether a rootfs (directory or tarball) holds p, an
// absolute path in it, following symlinks as the device would: inside the
// rootfs, absolute ones from its root, never on the host. A container
// image is refused (a build checks an image's init in the tree it
// unpacked: makeSquashfs).
func RootfsHas(ctx context.Context, rootfs, p string) (bool, error) {
	t, err := readRootfsTree(ctx, rootfs)
	if err != nil {
		return false, err
	}
	_, ok := resolveIn(t.lookup, p)
	return ok, nil
}

// rootfsTree looks up entries of a rootfs by their path in it ("" is the
// root) and reads the start of its files.
type rootfsTree struct {
	lookup func(rel string) (typ byte, link string, ok bool)
	// head returns up to n bytes from the start of the regular file rel.
	head func(rel string, n int) ([]byte, error)
}

// dirTree is the tree of a rootfs directory.
func dirTree(rootfs string) *rootfsTree {
	full := func(rel string) string { return filepath.Join(rootfs, filepath.FromSlash(rel)) }
	return &rootfsTree{
		lookup: func(rel string) (byte, string, bool) {
			fi, err := os.Lstat(full(rel))
			switch {
			case err != nil:
				return 0, "", false
			case fi.Mode()&fs.ModeSymlink != 0:
				l, err := os.Readlink(full(rel))
				return tar.TypeSymlink, l, err == nil
			case fi.IsDir():
				return tar.TypeDir, "", true
			}
			return tar.TypeReg, "", true
		},
		head: func(rel string, n int) ([]byte, error) {
			// rel was resolved inside the tree: no symlink left in it.
			f, err := os.Open(full(rel))
			if err != nil {
				return nil, err
			}
			defer f.Close()
			b := make([]byte, n)
			k, err := io.ReadFull(f, b)
			if err == io.ErrUnexpectedEOF || err == io.EOF {
				err = nil
			}
			return b[:k], err
		},
	}
}

func readRootfsTree(ctx context.Context, rootfs string) (*rootfsTree, error) {
	fi, err := os.Stat(rootfs)
	if err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	// An image needs an arch to pick by: openImage refuses it without.
	if img, err := openImage(ctx, rootfs, ""); err != nil {
		return nil, err
	} else if img != nil {
		img.close()
		return nil, fmt.Errorf("rootfs %s is a container image: it is read by the build, for an arch", rootfs)
	}
	if fi.IsDir() {
		return dirTree(rootfs), nil
	}
	// A tarball: one pass for the tree, and one more per file read.
	walk := func(each func(h *tar.Header, name string, r io.Reader) (stop bool, err error)) error {
		f, err := os.Open(rootfs)
		if err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		defer f.Close()
		r, done, err := decompress(f)
		if err != nil {
			return fmt.Errorf("rootfs tarball %s: %w", rootfs, err)
		}
		defer done()
		tr := tar.NewReader(r)
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			h, err := tr.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("rootfs tarball %s: %w", rootfs, err)
			}
			name, err := cleanName(h.Name)
			if err != nil {
				return fmt.Errorf("rootfs tarball %s: %w", rootfs, err)
			}
			if stop, err := each(h, name, tr); stop || err != nil {
				return err
			}
		}
	}
	type node struct {
		typ  byte
		link string
	}
	nodes := map[string]node{"": {tar.TypeDir, ""}}
	err = walk(func(h *tar.Header, name string, _ io.Reader) (bool, error) {
		nodes[name] = node{h.Typeflag, h.Linkname}
		for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := nodes[d]; !ok {
				nodes[d] = node{tar.TypeDir, ""}
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return &rootfsTree{
		lookup: func(rel string) (byte, string, bool) {
			n, ok := nodes[rel]
			return n.typ, n.link, ok
		},
		head: func(rel string, n int) ([]byte, error) {
			if nd := nodes[rel]; nd.typ == tar.TypeLink { // a hard link: its target's bytes
				if l, err := cleanName(nd.link); err == nil {
					rel = l
				}
			}
			var out []byte
			err := walk(func(h *tar.Header, name string, r io.Reader) (bool, error) {
				if name != rel || (h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeRegA) {
					return false, nil
				}
				b := make([]byte, n)
				k, err := io.ReadFull(r, b)
				if err == io.ErrUnexpectedEOF || err == io.EOF {
					err = nil
				}
				out = b[:k] // the last entry of a name wins: keep going
				return false, err
			})
			return out, err
		},
	}, nil
}

// resolveIn follows p through a tree described by lookup, component by
// component, symlinks resolved inside the tree (at most 40, as the kernel).
func resolveIn(lookup func(rel string) (byte, string, bool), p string) (string, bool) {
	todo := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	cur := ""
	for hops := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = strings.TrimSuffix(path.Dir("/"+cur), "/")
			cur = strings.TrimPrefix(cur, "/")
			continue
		}
		next := path.Join(cur, c)
		typ, link, ok := lookup(next)
		if !ok {
			return "", false
		}
		if typ == tar.TypeSymlink {
			if hops++; hops > 40 {
				return "", false
			}
			if strings.HasPrefix(link, "/") {
				cur = ""
			}
			todo = append(strings.Split(strings.Trim(link, "/"), "/"), todo...)
			continue
		}
		if len(todo) > 0 && typ != tar.TypeDir {
			return "", false
		}
		cur = next
	}
	return cur, true
}

// initWarnings says what would keep the device from starting the rootfs's
// init (p, followed through symlinks inside the rootfs): that it is
// missing, or that it or its ELF interpreter (PT_INTERP), or a script's
// #! interpreter, is a program for another machine than arch (an x86
// busybox in an arm64 rootfs) or missing. Warnings, not errors: a rootfs
// may start something else through [init] init.
func initWarnings(ctx context.Context, rootfs, p string, arch layout.Arch) ([]string, error) {
	t, err := readRootfsTree(ctx, rootfs)
	if err != nil {
		return nil, err
	}
	return checkInit(t, rootfs, p, arch)
}

// initWarningsIn is initWarnings of a directory tree, named name in the
// warnings: a build checks the tree mksquashfs packs (a tarball or an
// image unpacked), named by what the user gave.
// Several directories are the layers of a stacked root, top first
// (stackTree).
func initWarningsIn(name, p string, arch layout.Arch, dirs ...string) ([]string, error) {
	if len(dirs) == 1 {
		return checkInit(dirTree(dirs[0]), name, p, arch)
	}
	return checkInit(stackTree(dirs), name, p, arch)
}

// checkInit is initWarnings of the tree t, named rootfs in the warnings.
func checkInit(t *rootfsTree, rootfs, p string, arch layout.Arch) ([]string, error) {
	var warn []string
	seen := map[string]bool{}
	var check func(what, p string, depth int) error
	check = func(what, p string, depth int) error {
		rel, ok := resolveIn(t.lookup, p)
		if !ok {
			warn = append(warn, fmt.Sprintf("rootfs %s has no %s (%s): the device will have no program to start after the root is ready", rootfs, p, what))
			return nil
		}
		if seen[rel] || depth > 3 {
			return nil
		}
		seen[rel] = true
		b, err := t.head(rel, 64<<10)
		if err != nil {
			return err
		}
		if bytes.HasPrefix(b, []byte("#!")) {
			line, _, _ := bytes.Cut(b[2:], []byte("\n"))
			if f := strings.Fields(string(line)); len(f) > 0 && strings.HasPrefix(f[0], "/") {
				return check("the interpreter of "+p, f[0], depth+1)
			}
			return nil
		}
		class, machine, interp, ok := elfHead(b)
		if !ok {
			return nil // not an ELF file we can read from its start: nothing to say
		}
		if machine != elfMachines[arch] || class != elfClasses[arch] {
			warn = append(warn, fmt.Sprintf("%s in rootfs %s (%s) is a program for %s (%s), not for %s: the device cannot start it", p, rootfs, what, machineArch(machine), class, arch))
			return nil
		}
		if interp != "" {
			return check("the ELF interpreter of "+p, interp, depth+1)
		}
		return nil
	}
	if err := check("[init] init", p, 0); err != nil {
		return nil, err
	}
	return warn, nil
}

// elfHead reads an ELF file's class, machine and PT_INTERP from its first
// bytes (debug/elf wants the section headers too, at the end of the file).
func elfHead(b []byte) (class elf.Class, machine elf.Machine, interp string, ok bool) {
	if len(b) < 52 || !bytes.HasPrefix(b, []byte(elf.ELFMAG)) {
		return 0, 0, "", false
	}
	class = elf.Class(b[elf.EI_CLASS])
	var bo binary.ByteOrder = binary.LittleEndian
	if elf.Data(b[elf.EI_DATA]) == elf.ELFDATA2MSB {
		bo = binary.BigEndian
	}
	machine = elf.Machine(bo.Uint16(b[18:]))
	var phoff, phentsize, phnum uint64
	switch class {
	case elf.ELFCLASS64:
		if len(b) < 64 {
			return class, machine, "", true
		}
		phoff, phentsize, phnum = bo.Uint64(b[32:]), uint64(bo.Uint16(b[54:])), uint64(bo.Uint16(b[56:]))
	case elf.ELFCLASS32:
		phoff, phentsize, phnum = uint64(bo.Uint32(b[28:])), uint64(bo.Uint16(b[42:])), uint64(bo.Uint16(b[44:]))
	default:
		return 0, 0, "", false
	}
	for i := uint64(0); i < phnum && i < 64; i++ {
		o := phoff + i*phentsize
		if phentsize < 32 || o+phentsize > uint64(len(b)) {
			break
		}
		ph := b[o : o+phentsize]
		if elf.ProgType(bo.Uint32(ph)) != elf.PT_INTERP {
			continue
		}
		var off, size uint64
		if class == elf.ELFCLASS64 {
			off, size = bo.Uint64(ph[8:]), bo.Uint64(ph[32:])
		} else {
			off, size = uint64(bo.Uint32(ph[4:])), uint64(bo.Uint32(ph[16:]))
		}
		if off+size <= uint64(len(b)) && size < 4096 {
			interp = strings.TrimRight(string(b[off:off+size]), "\x00")
		}
		break
	}
	return class, machine, interp, true
}
