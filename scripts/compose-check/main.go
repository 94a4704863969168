// compose-check loads a Compose file the way `docker compose config` does, with the official
// compose-go library: it validates it against the Compose specification and interpolates
// it with an env file. For machines whose docker client has no compose plugin.
//
//	compose-check ENV_FILE COMPOSE_FILE
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: compose-check ENV_FILE COMPOSE_FILE")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(
		[]string{os.Args[2]},
		cli.WithWorkingDirectory("."),
		cli.WithEnvFiles(os.Args[1]),
		cli.WithDotEnv,
	)
	if err == nil {
		var project interface{ ServiceNames() []string }
		project, err = options.LoadProject(context.Background())
		if err == nil {
			fmt.Printf("%d services\n", len(project.ServiceNames()))
			return
		}
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
