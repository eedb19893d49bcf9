/* replay_main: a main() for the fuzz targets without libFuzzer, so every
 * build (gcc, ASan/UBSan) can replay the seed corpora and the regression
 * inputs: replay_<target> DIR_OR_FILE... runs LLVMFuzzerTestOneInput once on
 * every regular file given or found in the directories given (not
 * recursively; names sorted; hidden files and README* skipped). A missing
 * directory is only a warning; finding no input at all is an error (exit 2).
 * Each input's path goes to stderr before it runs, so a crash names it. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"

/* Weak: only some targets define it. */
extern int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int read_file(const char *path, uint8_t **data, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return -1;
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, fp);
        if (n < cap)
            break;
        uint8_t *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (!buf || bad) {
        free(buf);
        return -1;
    }
    *data = buf;
    *size = n;
    return 0;
}

static int run_file(const char *path)
{
    uint8_t *data;
    size_t size;
    if (read_file(path, &data, &size)) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        return -1;
    }
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, size);
    /* An exact-size copy, as libFuzzer passes, so ASan sees reads past the end. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        abort();
    memcpy(copy, data, size);
    free(data);
    LLVMFuzzerTestOneInput(copy, size);
    free(copy);
    return 0;
}

static int skip_name(const char *name)
{
    return name[0] == '.' || !strncmp(name, "README", 6);
}

static int run_dir(const char *dir, size_t *n_run)
{
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, NULL, alphasort);
    if (n < 0) {
        fprintf(stderr, "replay: warning: cannot list %s: %s\n", dir, strerror(errno));
        return 0;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (!skip_name(ents[i]->d_name) && rc == 0) {
            size_t len = strlen(dir) + strlen(ents[i]->d_name) + 2;
            char *path = malloc(len);
            if (!path)
                abort();
            snprintf(path, len, "%s/%s", dir, ents[i]->d_name);
            struct stat st;
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                rc = run_file(path);
                *n_run += rc == 0;
            }
            free(path);
        }
        free(ents[i]);
    }
    free(ents);
    return rc;
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    size_t n_run = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        int rc = 0;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            rc = run_dir(argv[i], &n_run);
        } else if (stat(argv[i], &st) == 0) {
            rc = run_file(argv[i]);
            n_run += rc == 0;
        } else {
            fprintf(stderr, "replay: warning: %s does not exist\n", argv[i]);
        }
        if (rc)
            return 1;
    }
    if (n_run == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 2;
    }
    printf("replay: %zu inputs ran without a crash\n", n_run);
    return 0;
}
