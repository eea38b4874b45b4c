package main

import "context"

func cmdValidate(_ context.Context, env *cliEnv, _ []string) int { return notYet(env, "validate") }
func cmdCompile(_ context.Context, env *cliEnv, _ []string) int  { return notYet(env, "compile") }
func cmdSchema(_ context.Context, env *cliEnv, _ []string) int   { return notYet(env, "schema") }
