// Command moe is the moe-operator engine's command line: it generates,
// inspects, runs, benchmarks and serves Mixtral-architecture models, and
// sizes deployments with the planner.
//
// Each subcommand lives in its own file and registers itself with rootCmd in
// an init function; this file only holds the root and main.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

var rootCmd = &cobra.Command{
	Use:           "moe",
	Short:         "Run and size Mixtral-architecture MoE models",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "moe:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode is 1, or the code an error carries (see `moe pull --help`).
func exitCode(err error) int {
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) && ec.ExitCode() > 0 {
		return ec.ExitCode()
	}
	return 1
}
