package redistest

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal has Linux kill the server if the test binary dies
// without running its cleanups (a timeout panic, SIGKILL), so no
// redis-server outlives its test.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
