package redisserver

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal has Linux kill the server if the process that
// started it dies without stopping it (a test's timeout panic, SIGKILL),
// so no redis-server outlives its owner.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
