/* report_gnuplot: finding and running gnuplot for the report. Each plot is a
 * script plus data files under <report>/gnuplot/ (kept, so `cd report &&
 * gnuplot gnuplot/<name>.gp` redraws it); gnuplot runs as a child process
 * with its stderr captured, and its exit status and output are checked. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/kvz_file.h"
#include "report_internal.h"

#define REP_NO_GNUPLOT "gnuplot not found: install gnuplot-nox (scripts/install-deps)"

static int is_executable_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

static char *search_path(const char *name)
{
    const char *env = getenv("PATH");
    char *dirs = strdup(env && *env ? env : "/usr/local/bin:/usr/bin:/bin");
    char *found = NULL, *save = NULL;
    for (char *d = dirs ? strtok_r(dirs, ":", &save) : NULL; d && !found;
         d = strtok_r(NULL, ":", &save)) {
        char *cand = kvz_path_join(*d ? d : ".", name);
        if (cand && is_executable_file(cand))
            found = cand;
        else
            free(cand);
    }
    free(dirs);
    return found;
}

int rep_gnuplot_find(const char *opt_path, char **out, kvz_error *err)
{
    *out = NULL;
    if (opt_path && strchr(opt_path, '/')) {
        if (!is_executable_file(opt_path))
            return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: " REP_NO_GNUPLOT, opt_path);
        *out = strdup(opt_path);
    } else {
        *out = search_path(opt_path ? opt_path : "gnuplot");
        if (!*out)
            return kvz_fail(err, KVZ_EUNSUPPORTED, REP_NO_GNUPLOT);
    }
    return *out ? KVZ_OK : kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
}

int rep_open_work_file(const rep_ctx *c, const char *file, FILE **fp, char **path, kvz_error *err)
{
    *fp = NULL;
    *path = NULL;
    char *dir = kvz_path_join(c->work_dir, "gnuplot");
    *path = dir ? kvz_path_join(dir, file) : NULL;
    free(dir);
    if (!*path)
        return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    *fp = fopen(*path, "w");
    if (!*fp) {
        int rc = kvz_fail(err, KVZ_EIO, "%s: cannot write: %s", *path, strerror(errno));
        free(*path);
        *path = NULL;
        return rc;
    }
    return KVZ_OK;
}

int rep_close_work_file(FILE *fp, const char *path, kvz_error *err)
{
    int bad = ferror(fp);
    if (fclose(fp) != 0 || bad)
        return kvz_fail(err, KVZ_EIO, "%s: write failed: %s", path,
                        errno ? strerror(errno) : "I/O error");
    return KVZ_OK;
}

int rep_script_begin(char **buf, size_t *len, FILE **fp, const char *name, int w, int h)
{
    *fp = open_memstream(buf, len);
    if (!*fp)
        return KVZ_ENOMEM;
    fprintf(*fp,
            "# %s.svg for kvzap report; run from the report directory: gnuplot gnuplot/%s.gp\n"
            "set encoding utf8\n"
            "set terminal svg size %d,%d fixed noenhanced font 'sans-serif,13' background rgb 'white'\n"
            "set output '%s.svg'\n"
            "set grid lc rgb '#dddddd' lw 1\n"
            "set border lw 1.2\n"
            "set key box opaque samplen 2.5 spacing 1.1\n",
            name, name, w, h, name);
    return KVZ_OK;
}

/* The last non-empty line of gnuplot's stderr (its error message). */
static void last_log_line(const char *log_path, char *out, size_t cap)
{
    char *text = NULL;
    size_t len = 0;
    out[0] = '\0';
    if (kvz_file_read_all(log_path, &text, &len, NULL))
        return;
    while (len && (text[len - 1] == '\n' || text[len - 1] == ' '))
        text[--len] = '\0';
    char *start = strrchr(text, '\n');
    snprintf(out, cap, "%s", start ? start + 1 : text);
    free(text);
}

/* fork + exec gnuplot <script> in <work>, stderr to log; returns wait status or -1. */
static int spawn(const rep_ctx *c, const char *script_rel, const char *log_path)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int log = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int null = open("/dev/null", O_RDWR);
        if (log < 0 || null < 0 || chdir(c->work_dir) != 0)
            _exit(126);
        dup2(null, 0);
        dup2(null, 1);
        dup2(log, 2);
        execl(c->gnuplot, "gnuplot", script_rel, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return status;
}

static int check_svg(const rep_ctx *c, const char *name, const char *script, kvz_error *err)
{
    char svg[256];
    snprintf(svg, sizeof svg, "%s.svg", name);
    char *path = kvz_path_join(c->work_dir, svg);
    struct stat st;
    int ok = path && stat(path, &st) == 0 && st.st_size > 0;
    free(path);
    return ok ? KVZ_OK
              : kvz_fail(err, KVZ_EIO, "%s: gnuplot exited 0 but wrote no %s", script, svg);
}

int rep_gnuplot_run(const rep_ctx *c, const char *name, const char *script, kvz_error *err)
{
    char file[256], rel[300];
    snprintf(file, sizeof file, "%s.gp", name);
    snprintf(rel, sizeof rel, "gnuplot/%s", file);
    FILE *fp;
    char *path, *log_path = NULL;
    int rc = rep_open_work_file(c, file, &fp, &path, err);
    if (rc)
        return rc;
    fputs(script, fp);
    rc = rep_close_work_file(fp, path, err);
    size_t n = strlen(path);
    if (!rc && !(log_path = malloc(n + 2)))
        rc = kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    if (!rc) {
        snprintf(log_path, n + 2, "%.*slog", (int)(n - 2), path);
        int st = spawn(c, rel, log_path);
        char why[400];
        last_log_line(log_path, why, sizeof why);
        if (st == -1)
            rc = kvz_fail(err, KVZ_EIO, "%s: cannot run %s: %s", path, c->gnuplot,
                          strerror(errno));
        else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            rc = kvz_fail(err, KVZ_EIO, "%s: gnuplot failed (%s %d): %s", path,
                          WIFEXITED(st) ? "exit status" : "signal",
                          WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
                          why[0] ? why : "no message");
        else
            rc = check_svg(c, name, path, err);
        if (!rc)
            unlink(log_path);
    }
    free(log_path);
    free(path);
    return rc;
}
