/* kvzap: the command-line entry point. Dispatches git-style subcommands to
 * cli/cmd_*.c; `kvzap --help` lists them, `kvzap CMD --help` explains one. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"info", cmd_info, "describe a checkpoint (architecture, shapes, quant types, tokenizer, template)"},
    {"gguf", cmd_gguf, "dump a GGUF file's metadata and tensor table"},
    {"tokenize", cmd_tokenize, "tokenize text with a model's tokenizer (ids, offsets)"},
    {"template", cmd_template, "render a chat conversation with a model's chat template"},
    {"generate", cmd_generate, "greedy generation (optionally chat-templated) with the CPU forward pass"},
    {"ppl", cmd_ppl, "perplexity of a text file with a sliding window"},
    {"logits", cmd_logits, "dump last-position (or all) logits to a file, for debugging"},
    {"oracle", cmd_oracle, "harvest KVzip+ oracle data (hidden states, log-scores) into HDF5"},
    {"train", cmd_train, "fit Linear and MLP surrogates per layer from an oracle dataset, with metrics"},
    {"report", cmd_report, "render the training report (SVG plots, index.html) from kvzap train output"},
    {"export", cmd_export, "export trained surrogates (kvpress safetensors or GGUF); --check verifies one"},
    {"score", cmd_score, "predict log-scores from an oracle dataset layer with an exported surrogate"},
    {"config", cmd_config, "validate a YAML run configuration and print it with defaults"},
    {"devices", cmd_devices, "list the CUDA devices this build can use"},
};
static const size_t N_COMMANDS = sizeof COMMANDS / sizeof COMMANDS[0];

static void print_usage(FILE *out)
{
    fprintf(out, "usage: kvzap <command> [options]   (kvzap <command> --help for details)\n\n"
                 "kvzap %s: KV-cache pruning surrogates (KVzap) for LLMs.\n\ncommands:\n",
            KVZ_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        print_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("kvzap %s\n", KVZ_VERSION);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], COMMANDS[i].name))
            return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "kvzap: unknown command '%s'\n\n", argv[1]);
    print_usage(stderr);
    return 2;
}
