//go:build !linux

package redisserver

import "os/exec"

// setParentDeathSignal does nothing outside Linux: a process killed
// without stopping its server may leave it behind.
func setParentDeathSignal(*exec.Cmd) {}
