// Command bedchild is the e2e bed's load and spinner process (bed.StartLoad,
// bed.StartSpin). It is a program of its own, built by make build without
// the race detector, so that under `make test` (go test -race) the load on
// a leader is what a real client puts on it, not an instrumented client's
// several times larger CPU cost.
package main

import (
	"fmt"
	"os"

	"github.com/vipd/vipd/e2e/bed"
)

func main() {
	if child, code := bed.RunChild(); child {
		os.Exit(code)
	}
	fmt.Fprintln(os.Stderr, "bedchild: started by the e2e bed (bed.StartLoad, bed.StartSpin), which passes its job in the environment; not a command to run by hand")
	os.Exit(2)
}
