package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func init() {
	rootCmd.Version = version()
	rootCmd.SetVersionTemplate("moe {{.Version}}\n")
	rootCmd.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version: the module version, the commit it was built from, and the Go version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "moe %s\n", version())
		},
	})
}

// version is the build's module version (a tag, or "(devel)"), its VCS commit and
// time when the build recorded them, and the Go version.
func version() string {
	v, commit, modified, at := "(devel)", "", false, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			case "vcs.time":
				at = s.Value
			}
		}
	}
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if commit != "" {
		v += " " + commit
		if modified {
			v += "-dirty"
		}
		if at != "" {
			v += " " + at
		}
	}
	return v + " " + runtime.Version()
}
