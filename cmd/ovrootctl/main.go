// Command ovrootctl is ovroot's on-device tool. See package ctl.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/ovroot/ovroot/internal/ctl"
)

func main() {
	err := ctl.Context{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Args: os.Args[1:]}.Execute(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "ovrootctl: %v\n", err)
		os.Exit(1)
	}
}
