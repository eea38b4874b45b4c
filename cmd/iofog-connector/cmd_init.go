package main

func runInit(env *cliEnv) int                 { return notYet(env, "appliance init") }
func runModprobe(env *cliEnv, _ []string) int { return notYet(env, "modprobe") }
