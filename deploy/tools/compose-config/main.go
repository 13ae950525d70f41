// Command compose-config loads, validates and prints a Compose project the way
// `docker compose config` does, with the library Docker Compose itself uses
// (compose-spec/compose-go), so compose files can be checked where no Docker
// Compose plugin is installed.
//
// Usage: compose-config [-f FILE]... [-p NAME] [--env-file FILE]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	var files, envFiles fileList
	flag.Var(&files, "f", "compose file (repeatable)")
	flag.Var(&envFiles, "env-file", "environment file for interpolation (repeatable)")
	name := flag.String("p", "", "project name")
	flag.Parse()

	options := []cli.ProjectOptionsFn{
		cli.WithOsEnv,
		cli.WithEnvFiles(envFiles...),
		cli.WithDotEnv,
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
	}
	if *name != "" {
		options = append(options, cli.WithName(*name))
	}
	opts, err := cli.NewProjectOptions(files, options...)
	if err != nil {
		fail(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalYAML()
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(out)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "compose-config:", err)
	os.Exit(1)
}
