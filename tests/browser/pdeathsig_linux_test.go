package browser_test

import (
	"os/exec"
	"syscall"
)

// setPdeathsig has the kernel kill serve if the test process dies first.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
