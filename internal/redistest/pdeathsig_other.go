//go:build !linux

package redistest

import "os/exec"

// setParentDeathSignal does nothing outside Linux: a test binary killed
// without running its cleanups may leave its redis-server behind.
func setParentDeathSignal(*exec.Cmd) {}
