// Package ovroot holds the source of the programs that run on the device
// (cmd/init, cmd/ovrootctl and the packages they import), embedded in the
// host tool. `ovroot build` compiles them from this copy, so an installed
// ovroot (go install .../cmd/ovroot@version) builds exactly its own
// version of the init, in any directory. See internal/gobuild.
//
// go:embed cannot reach parent directories, so this file sits at the
// module root. Patterns take whole packages (*_test.go files too: a pattern
// cannot exclude them; gobuild drops them when it extracts the tree).
// TestEmbeddedSourceCoversDeviceDeps fails when a device program imports a
// package of this module that is not listed here.
package ovroot

import "embed"

// Source is the module's go.mod, go.sum and the device programs' packages.
//
//go:embed go.mod go.sum
//go:embed cmd/init/*.go cmd/ovrootctl/*.go internal/demo/init/*.go
//go:embed backup/*.go boot/*.go config/*.go layout/*.go reset/*.go slot/*.go verity/*.go internal/ctl/*.go internal/eshell/*.go internal/netfetch/*.go internal/ocifetch/*.go
var Source embed.FS
