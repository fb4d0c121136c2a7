// Command ovroot is the host tool: it builds initramfs and disk images and
// boots them in QEMU. See package cli.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ovroot/ovroot/internal/cli"
)

func main() {
	// SIGINT and SIGTERM cancel the command, which stops its children and
	// removes what it made; a second signal kills at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	go func() { <-ctx.Done(); stop() }()
	err := cli.Context{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Args: os.Args[1:]}.Execute(ctx)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(os.Stderr, "ovroot: stopped by a signal: %v\n", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "ovroot: %v\n", err)
		if errors.Is(err, cli.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
