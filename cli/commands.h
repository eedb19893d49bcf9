/* cli/commands: the kvzap subcommands. Each cmd_* gets argv with argv[0] set
 * to the subcommand name, returns the process exit status (0 ok, 1 failure,
 * 2 usage error) and prints its own --help. */
#ifndef KVZ_CLI_COMMANDS_H
#define KVZ_CLI_COMMANDS_H

int cmd_info(int argc, char **argv);     /* cmd_info.c: model summary */
int cmd_gguf(int argc, char **argv);     /* cmd_gguf.c: GGUF metadata/tensor dump */
int cmd_tokenize(int argc, char **argv); /* cmd_tokenize.c: text -> ids, offsets */
int cmd_template(int argc, char **argv); /* cmd_template.c: render a chat template */
int cmd_generate(int argc, char **argv); /* cmd_generate.c: greedy generation */
int cmd_ppl(int argc, char **argv);      /* cmd_ppl.c: perplexity */
int cmd_logits(int argc, char **argv);   /* cmd_logits.c: logits dump */
int cmd_oracle(int argc, char **argv);   /* cmd_oracle.c: harvest oracle data */
int cmd_train(int argc, char **argv);    /* cmd_train.c: fit surrogates */
int cmd_report(int argc, char **argv);   /* cmd_report.c: training report (plots, HTML) */
int cmd_export(int argc, char **argv);   /* cmd_export.c: export / check surrogates */
int cmd_score(int argc, char **argv);    /* cmd_score.c: surrogate predictions */
int cmd_config(int argc, char **argv);   /* cmd_config.c: validate/print a YAML config */
int cmd_devices(int argc, char **argv);  /* cmd_devices.c: list CUDA devices */

/* Shared CLI helpers (cli_util.c). */
/* True when argv holds -h or --help. */
int cli_wants_help(int argc, char **argv);
/* Prints "kvzap <cmd>: <msg>" to stderr and returns 1 (or 2 for usage). */
int cli_error(const char *cmd, const char *msg);
int cli_usage_error(const char *cmd, const char *msg, const char *usage);
/* The default model's path: $KVZAP_DEFAULT_MODEL, else
 * ${KVZAP_CACHE:-~/.cache/kvzap}/SmolLM2-135M-Instruct.Q4_1.gguf (fetched by
 * scripts/fetch-assets). Static buffer. Used when a command's MODEL is omitted. */
const char *cli_default_model(void);

#endif
