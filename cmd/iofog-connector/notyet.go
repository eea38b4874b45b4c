package main

import "fmt"

// notYet is what a command says while its package has not landed: it says so
// plainly rather than pretending to work.
func notYet(env *cliEnv, what string) int {
	fmt.Fprintf(env.stderr, "iofog-connector: %s is not available in this build yet\n", what)
	return 1
}
