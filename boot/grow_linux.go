package boot

import (
	"fmt"

	"github.com/ovroot/ovroot/layout"
)

// repairPartitionTables looks, once per disk, at each disk in devs on which
// the kernel found no partitions: when its primary GPT is not valid and its
// backup is, the primary is rewritten from the backup and the kernel reads
// the table again. That is what a power cut while the primary was being
// rewritten (growDisk) leaves; without "gpt" on the command line the kernel
// does not read the backup itself. A disk that is not GPT costs two sector
// reads.
func (b *Boot) repairPartitionTables(devs []BlockDev) {
	hasParts := map[string]bool{}
	for _, d := range devs {
		if d.Partition {
			hasParts[d.Disk] = true
		}
	}
	for _, d := range devs {
		if d.Partition || hasParts[d.Name] || b.gptChecked[d.Name] {
			continue
		}
		if b.gptChecked == nil {
			b.gptChecked = map[string]bool{}
		}
		b.gptChecked[d.Name] = true
		b.guard("check the partition table of "+d.Path(), func() error {
			disk, err := b.Sys.OpenDisk(d.Name)
			if err != nil {
				b.Logf("no partitions on %s, and it cannot be opened to look at its GPT: %v", d.Path(), err)
				return nil
			}
			defer disk.Close()
			if disk.SectorSize() < 512 || disk.Size() < int64(disk.SectorSize()) {
				return nil
			}
			g := readDiskGPT(disk, uint64(disk.Size()/int64(disk.SectorSize())), disk.SectorSize())
			wrote, err := gptRepairPrimary(disk, g, func(f string, a ...any) { b.Warnf("%s: "+f, append([]any{d.Path()}, a...)...) })
			if err != nil {
				b.Warnf("%s has no partitions: %v", d.Path(), err)
				return nil
			}
			if !wrote {
				return nil
			}
			if err := disk.Reread(); err != nil {
				b.Warnf("%s: primary GPT repaired, but re-reading it (BLKRRPART): %v", d.Path(), err)
				return nil
			}
			b.Warnf("%s: primary GPT repaired from the backup; partitions read again", d.Path())
			b.state.Warnings = append(b.state.Warnings, fmt.Sprintf("the primary GPT of %s was repaired from its backup at boot", d.Path()))
			return nil
		})
	}
}

// growDisk brings the data partition's disk to its size before anything on
// it is mounted (see growGPT): the backup GPT at the end of the disk, and,
// unless grow = false, the data partition to the end. Nothing here stops
// the boot: on an error the data partition is used as it is.
func (b *Boot) growDisk(data BlockDev) {
	if data.Number < 1 || b.readOnly(data) {
		return // a read-only disk: mountData says why the boot is volatile
	}
	err := b.guard("grow the data partition", func() error {
		disk, err := b.Sys.OpenDisk(data.Disk)
		if err != nil {
			return err
		}
		defer disk.Close()
		res, err := growGPT(disk, data.Number, b.cfg.Grow, b.Logf)
		if err != nil {
			return err
		}
		if res.Repaired {
			b.Warnf("/dev/%s: primary GPT was not valid; rewritten from the backup", data.Disk)
			b.state.Warnings = append(b.state.Warnings, fmt.Sprintf("the primary GPT of /dev/%s was repaired from its backup at boot", data.Disk))
		}
		if res.StaleBackup {
			b.Warnf("/dev/%s: the backup GPT disagreed with the primary; rewritten from the primary (the table the kernel uses)", data.Disk)
			b.state.Warnings = append(b.state.Warnings, fmt.Sprintf("the backup GPT of /dev/%s disagreed with the primary and was rewritten from it at boot", data.Disk))
		}
		if res.Resized {
			b.Logf("grew data partition %s from %d to %d MiB", data.Path(), res.OldSize>>20, res.NewSize>>20)
		}
		return nil
	})
	if err != nil {
		b.Warnf("grow the data partition %s: %v; using it as it is", data, err)
	}
}

// growDataFS grows the mounted data filesystem to fill its partition
// (online, journaled; see LinuxSys.GrowFS). It costs one superblock read
// when there is nothing to do, and never stops the boot.
func (b *Boot) growDataFS(data BlockDev) {
	if !b.cfg.Grow {
		return
	}
	t := b.now()
	var from, to int64
	err := b.guard("grow the data filesystem", func() (err error) {
		from, to, err = b.Sys.GrowFS(data.Path(), layout.OverlayDir)
		return err
	})
	if err != nil {
		b.Warnf("grow the data filesystem on %s: %v; using it as it is", data.Path(), err)
		return
	}
	if to > from {
		b.Logf("grew the data filesystem on %s from %d to %d MiB in %d ms", data.Path(), from>>20, to>>20, ms(b.now().Sub(t)))
	}
}
