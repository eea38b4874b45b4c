package main

import "context"

func cmdCert(_ context.Context, env *cliEnv, _ []string) int { return notYet(env, "cert") }
