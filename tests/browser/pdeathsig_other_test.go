//go:build !linux

package browser_test

import "os/exec"

func setPdeathsig(*exec.Cmd) {}
