//go:build !linux

package main

import "os/exec"

// setParentDeathSignal does nothing outside Linux: a test binary killed
// without stopping its processes may leave them behind.
func setParentDeathSignal(*exec.Cmd) {}
