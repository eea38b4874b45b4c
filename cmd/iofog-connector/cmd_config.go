package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/eclipse-iofog/iofog-connector/atomicfile"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// newFlagSet makes a quiet flag set: configFlagErr prints help to stdout for -h
// and to stderr after a mistake, rather than the flag package's default.
func configFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// configParseArgs parses flags wherever they appear among the
// positional arguments ("compile FILE -o OUT" as well as "compile -o OUT FILE").
func configParseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// configFlagErr prints help for -h (exit 0) or the mistake and the usage (exit 2).
func configFlagErr(env *cliEnv, fs *flag.FlagSet, err error, synopsis, about string) int {
	if errors.Is(err, flag.ErrHelp) {
		configUsage(env.stdout, fs, synopsis, about)
		return 0
	}
	fmt.Fprintf(env.stderr, "iofog-connector %s: %v\n", fs.Name(), err)
	configUsage(env.stderr, fs, synopsis, about)
	return 2
}

func configUsage(w io.Writer, fs *flag.FlagSet, synopsis, about string) {
	fmt.Fprintf(w, "Usage: iofog-connector %s\n\n%s\n", synopsis, about)
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
}

const validateAbout = `Checks each config file against the schema. The format follows the
extension: .cue is CUE, .hcl is HCL, anything else (.conf, .json) is the
original's JSON. Every problem of every file is printed as
FILE:LINE:COLUMN: FIELD: what to change.
Exit status: 0 all valid, 1 any invalid, 2 usage error.`

func cmdValidate(_ context.Context, env *cliEnv, args []string) int {
	const synopsis = "validate FILE..."
	fs := configFlagSet("validate")
	files, err := configParseArgs(fs, args)
	if err != nil {
		return configFlagErr(env, fs, err, synopsis, validateAbout)
	}
	if len(files) == 0 {
		return configFlagErr(env, fs, errors.New("no config file given"), synopsis, validateAbout)
	}
	status := 0
	for _, f := range files {
		if _, err := schema.Load(f); err != nil {
			printConfigErrors(env.stderr, err)
			status = 1
			continue
		}
		fmt.Fprintf(env.stdout, "%s: valid\n", f)
	}
	return status
}

// printConfigErrors prints one line per problem.
func printConfigErrors(w io.Writer, err error) {
	var es schema.Errors
	if errors.As(err, &es) {
		for _, e := range es {
			fmt.Fprintln(w, e)
		}
		return
	}
	fmt.Fprintf(w, "iofog-connector: %v\n", err)
}

const compileAbout = `Validates FILE and writes the original Connector's settings file: exactly
the five keys ports, exclude, broker, address and dev, in that order. The
result is what /etc/iofog-connector/iofog-connector.conf holds. Without -o it
goes to standard output. Files are replaced atomically.`

func cmdCompile(_ context.Context, env *cliEnv, args []string) int {
	const synopsis = "compile FILE [-o OUT] [--indent] [--appliance OUT]"
	fs := configFlagSet("compile")
	out := fs.String("o", "", "write the settings to `OUT` instead of standard output")
	indent := fs.Bool("indent", false, "indent the JSON by two spaces (default compact, as the original ships it)")
	appl := fs.String("appliance", "", "also write the appliance settings (everything but the five keys) as JSON to `OUT` (- for standard output)")
	files, err := configParseArgs(fs, args)
	if err != nil {
		return configFlagErr(env, fs, err, synopsis, compileAbout)
	}
	if len(files) != 1 {
		return configFlagErr(env, fs, fmt.Errorf("want one config file, got %d", len(files)), synopsis, compileAbout)
	}
	cfg, err := schema.Load(files[0])
	if err != nil {
		printConfigErrors(env.stderr, err)
		return 1
	}
	settings, err := schema.CompileSettings(cfg, *indent)
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
		return 1
	}
	var appliance []byte
	if *appl != "" {
		if appliance, err = schema.CompileAppliance(cfg); err != nil {
			fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
			return 1
		}
	}
	if err := emitConfig(env, *out, settings); err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
		return 1
	}
	if *appl != "" {
		if err := emitConfig(env, *appl, appliance); err != nil {
			fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
			return 1
		}
	}
	return 0
}

// emit writes to standard output for "" or "-", else replaces the file
// atomically so a reader never sees half a settings file.
func emitConfig(env *cliEnv, path string, data []byte) error {
	if path == "" || path == "-" {
		_, err := env.stdout.Write(data)
		return err
	}
	return atomicfile.Write(path, data, 0o644, atomicfile.Options{})
}

const schemaAbout = `Prints the CUE schema that every config file is checked against: each
field, its type and its default (marked *).`

func cmdSchema(_ context.Context, env *cliEnv, args []string) int {
	const synopsis = "schema"
	fs := configFlagSet("schema")
	rest, err := configParseArgs(fs, args)
	if err != nil {
		return configFlagErr(env, fs, err, synopsis, schemaAbout)
	}
	if len(rest) > 0 {
		return configFlagErr(env, fs, fmt.Errorf("unexpected argument %q", rest[0]), synopsis, schemaAbout)
	}
	fmt.Fprint(env.stdout, schema.Source())
	return 0
}
