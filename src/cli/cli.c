/*
 * cli.c - `kiban VERB …`: the one table of verbs, the argument parser and
 * the help text, which is generated from the verb table and from the kinds
 * table (src/api/kinds.c).  The verbs themselves live in apply.c, get.c,
 * deploy.c, services.c, logs.c and gateway_verbs.c;
 * `server` and `__shim` hand their argv to the server and the runtime.
 */
#include "cli/cli.h"
#include "cli/cli_int.h"
#include "core/err.h"
#include "runtime/runtime.h"
#include "server/server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CLI_DEFAULT_API    "http://127.0.0.1:8401"
#define CLI_DEFAULT_TOKEN  "kiban-data/admin.token"
#define CLI_MAX_TOKEN      4096

static int help_run(kb_cli *c);

/* ---- the table ------------------------------------------------------------- */

const kb_cli_flag kb_cli__global_flags[] = {
    { "api", 0, "URL", false,
      "Admin API address (else $KIBAN_API, else " CLI_DEFAULT_API ")" },
    { "token-file", 0, "FILE", false,
      "File holding the API token (else $KIBAN_TOKEN, else ./"
      CLI_DEFAULT_TOKEN " if readable)" },
    { "project", 0, "P", false, "Project (default: \"default\")" },
    { NULL, 0, NULL, false, NULL },
};

/* Every verb but the raw ones takes -h/--help. */
static const kb_cli_flag help_flags[] = {
    { "help", 'h', NULL, false, "Show help for this verb" },
    { NULL, 0, NULL, false, NULL },
};

static const kb_cli_flag apply_flags[] = {
    { "filename", 'f', "FILE", true,
      "Manifest file (YAML or JSON, several documents allowed); - reads "
      "standard input. Repeat for more files." },
    { "dry-run", 0, NULL, false,
      "Show what would change; the server validates but changes nothing" },
    { NULL, 0, NULL, false, NULL },
};

static const kb_cli_flag get_flags[] = {
    { "output", 'o', "FORMAT", false, "table (default), json or yaml" },
    { NULL, 0, NULL, false, NULL },
};

static const kb_cli_flag create_key_flags[] = {
    { "gateway", 0, "NAME", false,
      "Accept the key only on this gateway (repeat; default: every gateway "
      "of the project)" },
    { "key", 0, "KEY", false,
      "Use this key instead of a generated one (e.g. one moved from Google)" },
    { "display-name", 0, "TEXT", false, "A label for people" },
    { NULL, 0, NULL, false, NULL },
};

static const kb_cli_flag purge_flags[] = {
    { "path-prefix", 0, "PATH", false,
      "Only responses to request paths starting with PATH" },
    { NULL, 0, NULL, false, NULL },
};

static const kb_cli_flag deploy_flags[] = {
    { "command", 0, "C", false,
      "Program to run (required when the service is new)" },
    { "arg", 0, "A", true,
      "An argument (repeat, in order); any --arg replaces all of them" },
    { "env", 0, "K=V", true, "Set an environment variable (repeat)" },
    { "remove-env", 0, "K", true, "Remove an environment variable (repeat)" },
    { "working-dir", 0, "DIR", false, "Working directory (absolute path)" },
    { "memory", 0, "SIZE", false, "Memory limit per instance: 512Mi, 1Gi" },
    { "cpu", 0, "CORES", false, "CPU limit per instance: 1, 0.5, 500m" },
    { "concurrency", 0, "N", false,
      "Requests in flight per instance (1-1000)" },
    { "min-instances", 0, "N", false,
      "Instances kept warm (0-1000; turns off a fixed count)" },
    { "max-instances", 0, "N", false, "Instances at most (1-1000)" },
    { "timeout", 0, "DUR", false,
      "How long a request may wait for an instance: 30s, 5m" },
    { "no-traffic", 0, NULL, false,
      "The new revision gets no traffic (traffic stays where it is)" },
    { "tag", 0, "TAG", false,
      "Give the new revision this tag (its own URL)" },
    { "no-wait", 0, NULL, false,
      "Do not wait for the new revision to be ready" },
    { "wait-timeout", 0, "DUR", false,
      "How long to wait for the revision (default 5m)" },
    { NULL, 0, NULL, false, NULL },
};

static const kb_cli_flag services_flags[] = {
    { "output", 'o', "FORMAT", false,
      "list, describe: table (default), json or yaml" },
    { "to-revisions", 0, "R=P,...", true,
      "update-traffic: percents of revisions (LATEST: the latest)" },
    { "to-tags", 0, "T=P,...", true,
      "update-traffic: percents of tagged revisions" },
    { "to-latest", 0, NULL, false,
      "update-traffic: all traffic to the latest revision, from now on" },
    { "set-tags", 0, "T=R,...", true,
      "update-traffic: replace every tag by these" },
    { "update-tags", 0, "T=R,...", true,
      "update-traffic: add or move these tags" },
    { "remove-tags", 0, "T,...", true, "update-traffic: remove these tags" },
    { "clear-tags", 0, NULL, false, "update-traffic: remove every tag" },
    { NULL, 0, NULL, false, NULL },
};

static const kb_cli_flag revisions_flags[] = {
    { "service", 0, "SERVICE", false, "The revisions' service (required)" },
    { "output", 'o', "FORMAT", false,
      "list: table (default), json or yaml; describe: yaml or json" },
    { NULL, 0, NULL, false, NULL },
};

static const kb_cli_flag logs_flags[] = {
    { "revision", 0, "R", false, "Only this revision's output" },
    { "since", 0, "DUR", false, "Only lines of the last DUR: 30s, 5m, 2h" },
    { "limit", 0, "N", false, "At most N lines (the newest)" },
    { "follow", 'f', NULL, false,
      "Keep printing new lines until interrupted (Ctrl-C)" },
    { "output", 'o', "FORMAT", false, "text (default) or json (one a line)" },
    { NULL, 0, NULL, false, NULL },
};

static const kb_cli_flag no_flags[] = {
    { NULL, 0, NULL, false, NULL },
};

const kb_cli_verb kb_cli__verbs[] = {
    { "server", "server [FLAGS]",
      "Run kiban: gateway, runtime and admin API in one process",
      "Runs every plane of kiban in this process until SIGINT or SIGTERM.\n"
      "Its flags are listed by 'kiban server --help'.",
      no_flags, 0, 0, false, false, NULL, kb_server_main },
    { "apply", "apply -f FILE|- [-f FILE...] [--dry-run]",
      "Create or update resources from manifests",
      "Reads every document of every file, checks them all, then creates each\n"
      "resource that does not exist and updates each one whose spec differs.\n"
      "Nothing is applied if any document has an error; errors are printed as\n"
      "FILE:LINE: FIELD: reason.  Prints KIND/NAME created, configured or\n"
      "unchanged for each document, in order.",
      apply_flags, 0, 0, false, true, kb_cli__apply, NULL },
    { "get", "get KIND [NAME] [-o table|json|yaml]",
      "List resources of a kind, or show one",
      "KIND is a kind (Service), its plural (services) or singular (service).\n"
      "Without NAME, lists every resource of the kind in the project.",
      get_flags, 1, 2, false, true, kb_cli__get, NULL },
    { "delete", "delete KIND NAME",
      "Delete a resource",
      "Deletes the named resource; a Service's processes are stopped.",
      no_flags, 2, 2, false, true, kb_cli__delete, NULL },
    { "deploy", "deploy SERVICE [--command C] [--arg A]... [--env K=V]... "
      "[FLAGS]",
      "Deploy a new revision of a service (create it if needed)",
      "Reads the service and applies the flags to its template: --command\n"
      "replaces the command, any --arg replaces all arguments, --env merges\n"
      "and --remove-env deletes variables.  A new service needs --command.\n"
      "A changed template makes a new revision; then waits until it is\n"
      "ready (or failed: its reason is printed, exit 1) and prints how much\n"
      "traffic it serves and the service's URL.  --no-traffic keeps the\n"
      "traffic where it is; --tag gives the revision its own URL.",
      deploy_flags, 1, 1, false, true, kb_cli__deploy, NULL },
    { "services", "services list|describe SERVICE|delete SERVICE|"
      "update-traffic SERVICE [FLAGS]",
      "List, describe and delete services; split their traffic",
      "list: one line per service (URL, latest ready revision, traffic).\n"
      "describe: URL, revisions, the traffic table, and a warning when the\n"
      "traffic is pinned (new revisions get none).\n"
      "update-traffic: --to-revisions R1=90,R2=10, --to-tags green=10 or\n"
      "--to-latest, and tags with --set-tags, --update-tags, --remove-tags,\n"
      "--clear-tags (as gcloud run services update-traffic).",
      services_flags, 1, 2, false, true, kb_cli__services, NULL },
    { "revisions", "revisions list|describe R|delete R --service SERVICE",
      "List, describe and delete a service's revisions",
      "A revision is an immutable template of a service.  A revision that\n"
      "serves traffic, carries a tag or is the latest cannot be deleted.",
      revisions_flags, 1, 2, false, true, kb_cli__revisions, NULL },
    { "logs", "logs SERVICE [--revision R] [--since 5m] [--limit N] "
      "[--follow]",
      "Print what a service's instances wrote",
      "One line per line of output: TIME REVISION/INSTANCE[:stderr] TEXT.\n"
      "--follow keeps printing new lines until Ctrl-C (exit 0).",
      logs_flags, 1, 1, false, true, kb_cli__logs, NULL },
    { "create-key", "create-key NAME [--gateway G]... [--key KEY]",
      "Create an API key and print it",
      "Creates ApiKey NAME and prints the key: the only time it is shown\n"
      "(kiban stores its SHA-256).  Clients send it where the gateway's\n"
      "apiKey security scheme says (e.g. ?key=...).",
      create_key_flags, 1, 1, false, true, kb_cli__create_key, NULL },
    { "purge-cache", "purge-cache GATEWAY [--path-prefix PATH]",
      "Drop a gateway's cached responses",
      "Drops every response the gateway has cached (x-kiban-cache), or\n"
      "those of request paths starting with PATH; prints how many.",
      purge_flags, 1, 1, false, true, kb_cli__purge_cache, NULL },
    { "version", "version",
      "Print the client's version, and the server's if it is reachable",
      "Prints 'kiban VERSION', then 'server VERSION' when the admin API\n"
      "answers.  Never fails because the server is down.",
      no_flags, 0, 0, false, true, kb_cli__version, NULL },
    { "help", "help [VERB|KIND|kinds]",
      "Show help for kiban, a verb or a kind",
      "'kiban help VERB' shows a verb's flags; 'kiban help KIND' the fields of\n"
      "a kind's spec; 'kiban help kinds' every kind.",
      no_flags, 0, 1, false, false, help_run, NULL },
    { "__shim", "__shim ...",
      "Supervise one service instance (started by the server)", "",
      no_flags, 0, 0, true, false, NULL, kb_runtime_shim_main },
    { NULL, NULL, NULL, NULL, NULL, 0, 0, false, false, NULL, NULL },
};

/* ---- output streams -------------------------------------------------------- */

static FILE *cli_out_stream, *cli_err_stream;

FILE *
kb_cli__out(void)
{
    return cli_out_stream != NULL ? cli_out_stream : stdout;
}

FILE *
kb_cli__err(void)
{
    return cli_err_stream != NULL ? cli_err_stream : stderr;
}

void
kb_cli__set_output(FILE *out, FILE *err)
{
    cli_out_stream = out;
    cli_err_stream = err;
}

/* ---- argument parsing ------------------------------------------------------ */

const kb_cli_verb *
kb_cli__verb_find(const char *name)
{
    for (const kb_cli_verb *v = kb_cli__verbs; v->name != NULL; v++)
        if (strcmp(v->name, name) == 0)
            return v;
    return NULL;
}

static const kb_cli_flag *
flag_find(const kb_cli_verb *v, const char *name, size_t len, char short_name)
{
    const kb_cli_flag *tables[3] = { v->flags, help_flags,
                                     v->api ? kb_cli__global_flags : NULL };

    for (int t = 0; t < 3 && tables[t] != NULL; t++) {
        for (const kb_cli_flag *f = tables[t]; f->name != NULL; f++) {
            if (short_name != 0 ? f->short_name == short_name
                : strlen(f->name) == len && strncmp(f->name, name, len) == 0)
                return f;
        }
    }
    return NULL;
}

int
kb_cli__parse(const kb_cli_verb *v, int argc, char **argv, kb_cli_opts *o,
              char *err, size_t errlen)
{
    bool flags_done = false;

    memset(o, 0, sizeof(*o));
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *value = NULL;
        const kb_cli_flag *f;

        if (flags_done || a[0] != '-' || a[1] == '\0') {   /* "-" is stdin */
            if (o->npos == KB_CLI_MAX_ARGS) {
                snprintf(err, errlen, "too many arguments");
                return KB_EINVAL;
            }
            o->pos[o->npos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            flags_done = true;
            continue;
        }
        if (a[1] == '-') {                       /* --name or --name=value */
            const char *eq = strchr(a + 2, '=');
            size_t len = eq != NULL ? (size_t)(eq - a - 2) : strlen(a + 2);
            f = flag_find(v, a + 2, len, 0);
            if (f != NULL && eq != NULL)
                value = eq + 1;
            if (f != NULL && eq != NULL && f->arg == NULL) {
                snprintf(err, errlen, "flag --%s takes no value", f->name);
                return KB_EINVAL;
            }
        } else {                                 /* -f VALUE or -fVALUE */
            f = flag_find(v, NULL, 0, a[1]);
            if (f != NULL && a[2] != '\0') {
                if (f->arg == NULL) {
                    snprintf(err, errlen, "unknown flag %s", a);
                    return KB_EINVAL;
                }
                value = a + 2;
            }
        }
        if (f == NULL) {
            snprintf(err, errlen, "unknown flag %s", a);
            return KB_EINVAL;
        }
        if (f->arg != NULL && value == NULL) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "flag --%s needs a value (%s)", f->name,
                         f->arg);
                return KB_EINVAL;
            }
            value = argv[++i];
        }
        if (!f->repeat && kb_cli__opt(o, f->name) != NULL) {
            snprintf(err, errlen, "flag --%s given twice", f->name);
            return KB_EINVAL;
        }
        if (o->nset == KB_CLI_MAX_ARGS) {
            snprintf(err, errlen, "too many flags");
            return KB_EINVAL;
        }
        o->set[o->nset].flag = f;
        o->set[o->nset].value = value != NULL ? value : "";
        o->nset++;
    }
    if (kb_cli__opt(o, "help") != NULL)
        return 0;                                /* help needs no arguments */
    if ((int)o->npos < v->min_args || (int)o->npos > v->max_args) {
        snprintf(err, errlen, "%s: usage: kiban %s", o->npos < (size_t)v->min_args
                 ? "missing arguments" : "too many arguments", v->synopsis);
        return KB_EINVAL;
    }
    return 0;
}

const char *
kb_cli__opt(const kb_cli_opts *o, const char *name)
{
    const char *last = NULL;

    for (size_t i = 0; i < o->nset; i++)
        if (strcmp(o->set[i].flag->name, name) == 0)
            last = o->set[i].value;
    return last;
}

size_t
kb_cli__opt_all(const kb_cli_opts *o, const char *name, const char **vals,
                size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < o->nset && n < max; i++)
        if (strcmp(o->set[i].flag->name, name) == 0)
            vals[n++] = o->set[i].value;
    return n;
}

/* ---- help -------------------------------------------------------------------- */

static void
print_flags(FILE *out, const kb_cli_flag *flags)
{
    for (const kb_cli_flag *f = flags; f->name != NULL; f++) {
        char left[64];
        if (f->short_name != 0)
            snprintf(left, sizeof(left), "-%c, --%s%s%s", f->short_name,
                     f->name, f->arg ? " " : "", f->arg ? f->arg : "");
        else
            snprintf(left, sizeof(left), "    --%s%s%s", f->name,
                     f->arg ? " " : "", f->arg ? f->arg : "");
        fprintf(out, "  %-26s %s\n", left, f->help);
    }
}

static void
help_main(FILE *out)
{
    fprintf(out, "kiban - a self-hosted microservice platform in one binary\n\n"
                 "Usage: kiban VERB [ARGUMENTS] [FLAGS]\n\nVerbs:\n");
    for (const kb_cli_verb *v = kb_cli__verbs; v->name != NULL; v++)
        if (!v->hidden)
            fprintf(out, "  %-12s %s\n", v->name, v->summary);
    fprintf(out, "\nKinds:");
    for (const kb_kind *const *k = kb_kinds; *k != NULL; k++)
        fprintf(out, "%s %s (%s)", k == kb_kinds ? "" : ",", (*k)->kind,
                (*k)->collection);
    fprintf(out, "\n\nFlags of the verbs that talk to the admin API "
                 "(after the verb):\n");
    print_flags(out, kb_cli__global_flags);
    fprintf(out, "\nRun 'kiban help VERB' for a verb, 'kiban help KIND' for the "
                 "fields of a kind.\n");
}

static void
help_verb(FILE *out, const kb_cli_verb *v)
{
    fprintf(out, "Usage: kiban %s\n\n%s.\n", v->synopsis, v->summary);
    if (v->help[0] != '\0')
        fprintf(out, "\n%s\n", v->help);
    if (v->flags[0].name != NULL) {
        fprintf(out, "\nFlags:\n");
        print_flags(out, v->flags);
    }
    if (v->api) {
        fprintf(out, "\nGlobal flags:\n");
        print_flags(out, kb_cli__global_flags);
    }
    if (strcmp(v->name, "apply") == 0 || strcmp(v->name, "get") == 0) {
        fprintf(out, "\nKinds:");
        for (const kb_kind *const *k = kb_kinds; *k != NULL; k++)
            fprintf(out, "%s %s", k == kb_kinds ? "" : ",", (*k)->kind);
        fprintf(out, " ('kiban help KIND' shows the fields)\n");
    }
}

static void
help_kind(FILE *out, const kb_kind *k)
{
    fprintf(out, "%s: %s\n\n"
                 "  apiVersion: kiban/v1        # optional\n"
                 "  kind: %s\n"
                 "  metadata:\n"
                 "    name: NAME                # a-z, 0-9, '-'; at most 63\n"
                 "    project: PROJECT          # optional, default \"default\"\n"
                 "  spec:\n", k->kind, k->help, k->kind);
    for (size_t i = 0; i < k->nfields; i++) {
        const kb_field *f = &k->fields[i];
        char what[128];
        switch (f->type) {
        case KB_FIELD_STRING:
            snprintf(what, sizeof(what), "string, at most %lld bytes",
                     f->max > 0 ? f->max : 4096);
            break;
        case KB_FIELD_INT:
            if (f->min != 0 || f->max != 0)
                snprintf(what, sizeof(what), "integer, %lld to %lld", f->min,
                         f->max);
            else
                snprintf(what, sizeof(what), "integer");
            break;
        case KB_FIELD_BOOL:
            snprintf(what, sizeof(what), "true or false");
            break;
        case KB_FIELD_STRING_LIST:
            snprintf(what, sizeof(what), "list of strings, at most %lld",
                     f->max > 0 ? f->max : 1024);
            break;
        case KB_FIELD_STRING_MAP:
            snprintf(what, sizeof(what), "mapping of strings, at most %lld",
                     f->max > 0 ? f->max : 1024);
            break;
        case KB_FIELD_OBJECT:
            snprintf(what, sizeof(what), "mapping");
            break;
        }
        fprintf(out, "    %-13s %s%s%s\n      %s\n", f->name, what,
                f->required ? ", required" : "",
                f->cli_only ? ", read by the CLI" : "", f->help);
    }
}

static int
help_run(kb_cli *c)
{
    FILE *out = kb_cli__out();
    const kb_cli_verb *v;
    const kb_kind *k;
    const char *what = c->opts.npos > 0 ? c->opts.pos[0] : NULL;

    if (what == NULL) {
        help_main(out);
        return KB_CLI_EXIT_OK;
    }
    if ((v = kb_cli__verb_find(what)) != NULL && !v->hidden) {
        help_verb(out, v);
        if ((k = kb_kind_find(what)) != NULL) {   /* `services`: both */
            fputc('\n', out);
            help_kind(out, k);
        }
        return KB_CLI_EXIT_OK;
    }
    if ((k = kb_kind_find(what)) != NULL) {
        help_kind(out, k);
        return KB_CLI_EXIT_OK;
    }
    if (strcmp(what, "kinds") == 0) {
        for (const kb_kind *const *kk = kb_kinds; *kk != NULL; kk++) {
            if (kk != kb_kinds)
                fputc('\n', out);
            help_kind(out, *kk);
        }
        return KB_CLI_EXIT_OK;
    }
    fprintf(kb_cli__err(), "kiban: no help for \"%s\"; run 'kiban help'\n",
            what);
    return KB_CLI_EXIT_USAGE;
}

/* ---- connection settings ------------------------------------------------------ */

/* Read a token file: first line, surrounding whitespace removed.  NULL with
 * errno set on failure. */
static char *
read_token(const char *path)
{
    char buf[CLI_MAX_TOKEN + 2];
    FILE *f = fopen(path, "re");
    size_t n;

    if (f == NULL)
        return NULL;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    if (n > CLI_MAX_TOKEN) {
        errno = E2BIG;
        return NULL;
    }
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return strdup(buf);
}

/* Trim in place; false if the token holds characters a header can't. */
static bool
token_clean(char *t)
{
    size_t n = strlen(t), s = 0;

    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        t[--n] = '\0';
    while (t[s] == ' ' || t[s] == '\t')
        s++;
    memmove(t, t + s, n - s + 1);
    for (const char *p = t; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

static int
setup_api(kb_cli *c)
{
    const char *api = kb_cli__opt(&c->opts, "api");
    const char *tf = kb_cli__opt(&c->opts, "token-file");
    const char *env;
    size_t n;

    if (api == NULL && (api = getenv("KIBAN_API")) == NULL)
        api = CLI_DEFAULT_API;
    if (strncmp(api, "http://", 7) != 0 && strncmp(api, "https://", 8) != 0) {
        fprintf(kb_cli__err(), "kiban: the API address must start with http:// "
                "or https:// (got \"%s\"); run 'kiban help'\n", api);
        return KB_CLI_EXIT_USAGE;
    }
    n = strlen(api);
    while (n > 0 && api[n - 1] == '/')
        n--;
    if (n >= sizeof(c->api)) {
        fprintf(kb_cli__err(), "kiban: the API address is too long\n");
        return KB_CLI_EXIT_USAGE;
    }
    memcpy(c->api, api, n);
    c->api[n] = '\0';

    if (tf != NULL) {
        if ((c->token = read_token(tf)) == NULL) {
            fprintf(kb_cli__err(), "kiban: cannot read the token file %s: %s\n",
                    tf, strerror(errno));
            return KB_CLI_EXIT_FAIL;
        }
    } else if ((env = getenv("KIBAN_TOKEN")) != NULL && env[0] != '\0') {
        if ((c->token = strdup(env)) == NULL)
            return KB_CLI_EXIT_FAIL;
    } else {
        c->token = read_token(CLI_DEFAULT_TOKEN);    /* optional */
    }
    if (c->token != NULL && strlen(c->token) > CLI_MAX_TOKEN) {
        fprintf(kb_cli__err(), "kiban: the API token is longer than %d bytes\n",
                CLI_MAX_TOKEN);
        return KB_CLI_EXIT_FAIL;
    }
    if (c->token != NULL && !token_clean(c->token)) {
        fprintf(kb_cli__err(), "kiban: the API token holds control "
                "characters\n");
        return KB_CLI_EXIT_FAIL;
    }
    if (c->token != NULL && c->token[0] == '\0') {
        free(c->token);
        c->token = NULL;
    }
    c->project = kb_cli__opt(&c->opts, "project");
    if (c->project != NULL && !kb_name_valid(c->project)) {
        fprintf(kb_cli__err(), "kiban: --project \"%s\" is not a valid project "
                "name (a-z, 0-9 and '-', starting with a letter); run 'kiban "
                "help'\n", c->project);
        return KB_CLI_EXIT_USAGE;
    }
    return KB_CLI_EXIT_OK;
}

/* ---- main ---------------------------------------------------------------------- */

int
kb_cli_main(int argc, char **argv)
{
    const kb_cli_verb *v;
    kb_cli *c;
    char err[512];
    int rc;

    if (argc < 2) {
        help_main(kb_cli__err());
        return KB_CLI_EXIT_USAGE;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        help_main(kb_cli__out());
        return KB_CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0)
        argv[1] = (char *)"version";
    if ((v = kb_cli__verb_find(argv[1])) == NULL) {
        fprintf(kb_cli__err(), "kiban: unknown verb \"%s\"; run 'kiban help'\n",
                argv[1]);
        return KB_CLI_EXIT_USAGE;
    }
    if (v->raw != NULL)
        return v->raw(argc - 1, argv + 1);

    if ((c = calloc(1, sizeof(*c))) == NULL) {
        fprintf(kb_cli__err(), "kiban: out of memory\n");
        return KB_CLI_EXIT_FAIL;
    }
    if (kb_cli__parse(v, argc - 2, argv + 2, &c->opts, err, sizeof(err)) != 0) {
        fprintf(kb_cli__err(), "kiban %s: %s; run 'kiban help %s'\n", v->name,
                err, v->name);
        rc = KB_CLI_EXIT_USAGE;
        goto out_free;
    }
    if (kb_cli__opt(&c->opts, "help") != NULL) {
        help_verb(kb_cli__out(), v);
        rc = KB_CLI_EXIT_OK;
        goto out_free;
    }
    if (v->api && (rc = setup_api(c)) != KB_CLI_EXIT_OK)
        goto out_free;
    rc = v->run(c);
    fflush(kb_cli__out());

out_free:
    kb_cli__http_cleanup();
    free(c->token);
    free(c);
    return rc;
}
