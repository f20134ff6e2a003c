package main

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal has Linux kill the process if the test binary dies
// without stopping it (a timeout panic, SIGKILL), so none outlives its test.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
