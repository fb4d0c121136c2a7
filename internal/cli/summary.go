package cli

import (
	"fmt"
	"github.com/ovroot/ovroot/layout"
	"io"
	"os"
	"strings"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/imagebuild"
)

// printSummary ends `ovroot build` with what a person needs next: what
// was built, its partitions, what it carries, and the command that boots
// it.
func printSummary(w io.Writer, im *config.Image, res *imagebuild.ImageResult) {
	fmt.Fprintf(w, "%s: %s image, %s\n", res.Path, im.Arch, human(res.Bytes))
	for _, p := range res.Partitions {
		fmt.Fprintf(w, "  %d  %-12s %9s", p.Index, p.Label, human(p.Size))
		if p.Index == 2 {
			fmt.Fprintf(w, "  squashfs %s, %d entries", human(res.SquashfsBytes), res.Entries)
			if res.Verity != nil {
				fmt.Fprintf(w, ", verity tree %s", human(res.VerityBytes))
			}
		}
		fmt.Fprintln(w)
	}
	if res.Rootfs != "" {
		fmt.Fprintf(w, "  rootfs: %s\n", res.Rootfs)
	}
	e2fsck := "none (the data partition cannot be repaired)"
	if res.E2fsck != "" {
		e2fsck = res.E2fsck
	}
	loader := string(res.Loader)
	switch res.Loader {
	case layout.LoaderUEFI:
		loader = fmt.Sprintf("uefi (%s as %s)", res.LoaderFile, im.Arch.EFIBootFile())
	case layout.LoaderUBoot:
		loader = "uboot (" + layout.ExtlinuxFile + ")"
		if res.BuildID != "" {
			loader = "uboot (" + layout.BootScriptFile + ", A/B boot counting)"
		}
	}
	if loader != "" {
		fmt.Fprintf(w, "  loader: %s\n", loader)
	}
	if res.Verity != nil {
		fmt.Fprintf(w, "  verity: root hash %x (ovroot.verity= on the command line): the init checks every block of the root before it mounts it\n", res.Verity.RootHash)
	}
	if res.BuildID != "" {
		fmt.Fprintf(w, "  slots: a (build %s, confirmed) and b (empty until an upgrade); board %s\n", res.BuildID, res.Board)
	}
	if res.BundleBytes > 0 {
		fmt.Fprintf(w, "  update bundle: build %s, %s\n", res.BuildID, human(res.BundleBytes))
	}
	fmt.Fprintf(w, "  e2fsck: %s\n  ovrootctl: %s\n  modules: %s\n", e2fsck, res.Ctl, strings.Join(res.Modules, " "))
	fmt.Fprintf(w, "boot it: ovroot run %s\n", shellWord(res.Path))
}

// human is a byte count in binary units, exact when it can be ("128 MiB").
func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// shellWord quotes p when a shell would split or expand it.
func shellWord(p string) string {
	if p != "" && !strings.ContainsAny(p, " \t\n'\"\\$`*?[]#~&;|<>(){}!") {
		return p
	}
	return "'" + strings.ReplaceAll(p, "'", `'\''`) + "'"
}

// terminal is stderr when it is a terminal: status lines during long
// steps go there; a pipe or a log file gets none.
func (c Context) terminal() io.Writer {
	if f, ok := c.Stderr.(*os.File); ok && isTerminal(f) {
		return f
	}
	return nil
}
