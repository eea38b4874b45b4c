package main

import "context"

func cmdRun(_ context.Context, env *cliEnv, _ []string) int     { return notYet(env, "run") }
func cmdStatus(_ context.Context, env *cliEnv, _ []string) int  { return notYet(env, "status") }
func cmdStop(_ context.Context, env *cliEnv, _ []string) int    { return notYet(env, "stop") }
func cmdMapping(_ context.Context, env *cliEnv, _ []string) int { return notYet(env, "mapping") }
