package imagebuild

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Addition is a host file put into the image's root unless the rootfs
// already has a file at one of Unless (the rootfs wins: a device's own
// ovrootctl is never replaced). The user's rootfs is never modified: the
// file and any missing directories are mksquashfs pseudo definitions.
type Addition struct {
	Path   string      // absolute path in the image
	Source string      // host file
	Mode   fs.FileMode // permission bits
	Unless []string    // absolute paths in the image
	// Own marks a file only ovroot writes (the update policy, trusted
	// keys): a rootfs that has one is refused, so that no vendor tarball
	// adds a key the image.toml does not name.
	Own bool

	// Note is set by MakeSquashfs: what it did ("added /usr/sbin/ovrootctl
	// ..." or "rootfs has /bin/ovrootctl ...").
	Note string
}

// ownDirs may exist in a rootfs although ovroot's own files go there.
var ownDirs = map[string]bool{"/etc/ovroot": true}

// additionArgs returns the mksquashfs arguments that add adds to the tree
// at root (the rootfs directory, or the unpacked tarball) and the number of
// entries they add, and sets each addition's Note.
//
// The file is an "F" definition (create a file from a command's output,
// with a fixed time, so the image stays reproducible) reading the host
// file with cat; missing directories are "D" definitions. mksquashfs(1),
// "Pseudo file definition format" (squashfs-tools 4.5).
func additionArgs(root string, adds []Addition) (args []string, entries int, err error) {
	made := map[string]bool{} // directories defined by an earlier addition
	for i := range adds {
		a := &adds[i]
		if a.Own {
			if found, err := firstExisting(root, []string{a.Path, path.Dir(a.Path)}); err != nil {
				return nil, 0, err
			} else if found != "" && (found == a.Path || !ownDirs[found]) {
				return nil, 0, fmt.Errorf("the rootfs has %s: ovroot writes it from image.toml's [update] (trusted_keys, version); remove it from the rootfs", found)
			}
		}
		if found, err := firstExisting(root, a.Unless); err != nil {
			return nil, 0, err
		} else if found != "" {
			a.Note = fmt.Sprintf("rootfs has %s: %s not added", found, path.Base(a.Path))
			continue
		}
		// mksquashfs stores an empty file when the F command fails, so
		// the source is checked here.
		if fi, err := os.Stat(a.Source); err != nil {
			return nil, 0, fmt.Errorf("add %s to the rootfs: %w", a.Path, err)
		} else if !fi.Mode().IsRegular() {
			return nil, 0, fmt.Errorf("add %s to the rootfs: %s is not a regular file", a.Path, a.Source)
		}
		// The directory the file goes into, as the device would resolve
		// it (/usr/sbin may be a symlink in the rootfs).
		dir, missing, err := resolveDirIn(root, path.Dir(a.Path))
		if err != nil {
			return nil, 0, fmt.Errorf("add %s to the rootfs: %w", a.Path, err)
		}
		for _, m := range missing {
			dir = path.Join(dir, m)
			if made[dir] {
				continue
			}
			made[dir] = true
			args = append(args, "-p", pseudoEscape(dir)+" D 0 755 0 0")
			entries++
		}
		file := path.Join(dir, path.Base(a.Path))
		args = append(args, "-p", fmt.Sprintf("%s F 0 %o 0 0 cat %s", pseudoEscape(file), a.Mode.Perm(), shellQuote(a.Source)))
		entries++
		a.Note = fmt.Sprintf("added %s (the rootfs has none)", file)
	}
	return args, entries, nil
}

// firstExisting returns the first of paths that names an entry in the
// tree at root (any type: a symlink named ovrootctl counts as one).
func firstExisting(root string, paths []string) (string, error) {
	for _, p := range paths {
		dir, missing, err := resolveDirIn(root, path.Dir(p))
		if err != nil {
			// /sbin is a file, or a symlink loop: nothing is there.
			continue
		}
		if len(missing) > 0 {
			continue
		}
		if _, err := os.Lstat(filepath.Join(root, filepath.FromSlash(path.Join(dir, path.Base(p))))); err == nil {
			return p, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("rootfs entry %s: %w", p, err)
		}
	}
	return "", nil
}

// resolveDirIn resolves the absolute directory path p inside the tree at
// root the way the device will: symlinks are followed, absolute targets
// are relative to root, and ".." never climbs above it. It returns the
// deepest existing directory (absolute, in image terms) and the names
// below it that do not exist.
func resolveDirIn(root, p string) (dir string, missing []string, err error) {
	comps := splitPath(p)
	cur := "/"
	for hops := 0; len(comps) > 0; {
		c := comps[0]
		next := path.Join(cur, c)
		fi, err := os.Lstat(filepath.Join(root, filepath.FromSlash(next)))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return cur, comps, nil
		case err != nil:
			return "", nil, fmt.Errorf("rootfs entry %s: %w", next, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			if hops++; hops > 40 {
				return "", nil, fmt.Errorf("rootfs entry %s: too many levels of symbolic links", p)
			}
			target, err := os.Readlink(filepath.Join(root, filepath.FromSlash(next)))
			if err != nil {
				return "", nil, err
			}
			if !path.IsAbs(target) {
				target = path.Join(cur, target)
			}
			comps = append(splitPath(target), comps[1:]...)
			cur = "/"
		case !fi.IsDir():
			return "", nil, fmt.Errorf("rootfs entry %s is not a directory", next)
		default:
			cur = next
			comps = comps[1:]
		}
	}
	return cur, nil, nil
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(path.Clean("/"+p), "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

// pseudoEscape escapes a path for a pseudo definition (spaces, tabs and
// backslashes are backslash-escaped).
func pseudoEscape(p string) string {
	var b strings.Builder
	for _, r := range p {
		if r == ' ' || r == '\\' || r == '\t' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// shellQuote quotes s for /bin/sh, which runs an F definition's command.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
