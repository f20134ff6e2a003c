package main_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
)

// The README's configuration table, `memhook help`'s variable table and
// the variables the configuration loader reads name the same variables
// with the same defaults.
func TestREADMEConfigurationTableMatchesTheCode(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := map[string]string{}
	row := regexp.MustCompile("(?m)^\\| `((?:MEM0|MEMHOOK|BOT)_[A-Z_]+)` \\|\\s*([^|]*?)\\s*\\|")
	for _, m := range row.FindAllStringSubmatch(string(raw), -1) {
		def := strings.Trim(strings.TrimSpace(m[2]), "`")
		if def == "" || def == "(unset)" {
			def = "(unset)"
		}
		if _, dup := readme[m[1]]; dup {
			t.Errorf("README: %s has two rows", m[1])
		}
		readme[m[1]] = def
	}

	code, stdout, stderr := run(t, env{}, 30*time.Second, "help")
	if code != 0 {
		t.Fatalf("help: exit %d: %s", code, stderr)
	}
	help := map[string]string{}
	helpRow := regexp.MustCompile(`(?m)^\s+((?:MEM0|MEMHOOK|BOT)_[A-Z_]+)\s+(?:-|--[a-z-]+)\s+(\(unset[^)]*\)|\S+)\s`)
	for _, m := range helpRow.FindAllStringSubmatch(stdout, -1) {
		help[m[1]] = m[2]
	}
	if len(help) == 0 {
		t.Fatalf("no variable rows in help:\n%s", stdout)
	}
	for name, def := range help {
		rd, ok := readme[name]
		switch {
		case !ok:
			t.Errorf("README's configuration table lacks %s (help: default %s)", name, def)
		case rd != def && !(strings.HasPrefix(rd, "(unset") && strings.HasPrefix(def, "(unset")):
			t.Errorf("%s: README says default %q, help %q", name, rd, def)
		}
	}
	for name := range readme {
		if _, ok := help[name]; !ok {
			t.Errorf("README documents %s, which memhook does not read (not in help)", name)
		}
	}

	var read []string
	_, _ = bus.ConfigFromLookup(func(name string) (string, bool) {
		read = append(read, name)
		return "", false
	})
	if len(read) == 0 {
		t.Fatal("ConfigFromLookup read no variable")
	}
	for _, name := range read {
		if _, ok := help[name]; !ok {
			t.Errorf("bus.ConfigFromLookup reads %s, which help does not list", name)
		}
	}
	if t.Failed() {
		names := make([]string, 0, len(help))
		for n := range help {
			names = append(names, n)
		}
		slices.Sort(names)
		t.Logf("help lists %v", names)
	}
}
