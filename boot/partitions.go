package boot

import (
	"bufio"
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// BlockDev is one block device as sysfs describes it.
type BlockDev struct {
	Name      string // kernel name, e.g. "vda3"; the node is /dev/<Name>
	Disk      string // the whole disk a partition belongs to ("vda"); Name for a disk
	PartLabel string // GPT partition name (PARTNAME in uevent)
	Partition bool
	Number    int // partition number (PARTN), 1-based; 0 for a disk
	Major     int
	Minor     int
}

// Path is the device node.
func (d BlockDev) Path() string { return "/dev/" + d.Name }

func (d BlockDev) String() string {
	if d.PartLabel != "" {
		return fmt.Sprintf("%s (PARTLABEL=%s)", d.Path(), d.PartLabel)
	}
	return d.Path()
}

// parseUevent reads a sysfs uevent file (KEY=value lines) into a BlockDev.
// disk is the parent disk's name for a partition (from the sysfs path).
func parseUevent(data []byte, disk string) (BlockDev, error) {
	var d BlockDev
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "DEVNAME":
			d.Name = v
		case "PARTNAME":
			d.PartLabel = v
		case "DEVTYPE":
			d.Partition = v == "partition"
		case "PARTN":
			d.Number, _ = strconv.Atoi(v)
		case "MAJOR":
			d.Major, _ = strconv.Atoi(v)
		case "MINOR":
			d.Minor, _ = strconv.Atoi(v)
		}
	}
	if d.Name == "" {
		return d, fmt.Errorf("uevent has no DEVNAME")
	}
	d.Disk = d.Name
	if d.Partition {
		d.Disk = disk
	}
	return d, nil
}

// selection is the outcome of selectPartitions.
type selection struct {
	Found    map[string]BlockDev // by label
	Missing  []string            // labels not found at all, in the order asked
	Warnings []string            // choices a person should know about
}

// selectPartitions picks, for each label, the partition that carries it.
//
// A label found on exactly one partition is taken. When a label is on
// several partitions (a second disk with another ovroot image plugged in,
// say), the disk holding the most of the wanted labels wins, ties broken by
// the lowest device number, i.e. the disk the kernel found first; the choice
// is reported in Warnings. Two partitions with the same label on the same
// disk cannot be told apart and are an error, since booting the wrong root
// or formatting the wrong data partition is worse than not booting.
func selectPartitions(devs []BlockDev, labels ...string) (selection, error) {
	sel := selection{Found: map[string]BlockDev{}}
	byLabel := map[string][]BlockDev{}
	for _, d := range devs {
		if d.Partition && d.PartLabel != "" {
			byLabel[d.PartLabel] = append(byLabel[d.PartLabel], d)
		}
	}
	// How many wanted labels each disk holds, and its device number.
	score := map[string]int{}
	diskNum := map[string][2]int{}
	for _, l := range labels {
		seen := map[string]bool{}
		for _, d := range byLabel[l] {
			if !seen[d.Disk] {
				score[d.Disk]++
				seen[d.Disk] = true
			}
		}
	}
	for _, d := range devs {
		if !d.Partition {
			diskNum[d.Name] = [2]int{d.Major, d.Minor}
		}
	}
	for _, l := range labels {
		cands := byLabel[l]
		switch len(cands) {
		case 0:
			sel.Missing = append(sel.Missing, l)
			continue
		case 1:
			sel.Found[l] = cands[0]
			continue
		}
		sort.SliceStable(cands, func(i, j int) bool {
			a, b := cands[i], cands[j]
			if score[a.Disk] != score[b.Disk] {
				return score[a.Disk] > score[b.Disk]
			}
			na, nb := diskNum[a.Disk], diskNum[b.Disk]
			if na != nb {
				return na[0] < nb[0] || (na[0] == nb[0] && na[1] < nb[1])
			}
			return a.Disk < b.Disk
		})
		if cands[0].Disk == cands[1].Disk {
			return sel, fmt.Errorf("PARTLABEL %s is on both %s and %s of the same disk: cannot tell which to use", l, cands[0].Path(), cands[1].Path())
		}
		var others []string
		for _, c := range cands[1:] {
			others = append(others, c.Path())
		}
		sel.Found[l] = cands[0]
		sel.Warnings = append(sel.Warnings, fmt.Sprintf("PARTLABEL %s is on several disks; using %s, ignoring %s", l, cands[0].Path(), strings.Join(others, ", ")))
	}
	return sel, nil
}

// describeDevices lists block devices for error messages, one per line.
func describeDevices(devs []BlockDev) string {
	if len(devs) == 0 {
		return "(no block devices at all: is the disk driver module missing?)"
	}
	var b strings.Builder
	for i, d := range devs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.String())
	}
	return b.String()
}
