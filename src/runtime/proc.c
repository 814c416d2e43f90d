/*
 * proc.c - reading /proc: process start times (to tell a process from a
 * recycled pid), process groups, and the boot id.  Used by the server when
 * it reaps leftover instances and by the shim when it sweeps its group.
 * These are reads of kernel memory, not of a disk, so they are fine on the
 * loop thread.
 */
#include "runtime/runtime_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"

/* Read a small /proc file into buf (NUL-terminated).  0 or -errno. */
static int
read_small(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n;
    do {
        n = read(fd, buf, len - 1);
    } while (n < 0 && errno == EINTR);
    int saved = errno;
    close(fd);
    if (n < 0)
        return -saved;
    buf[n] = '\0';
    return 0;
}

int
kb__proc_stat(int pid, char *state, int *pgrp, uint64_t *starttime)
{
    char path[64], buf[1024];

    if (pid <= 0)
        return KB_EINVAL;
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    int rc = read_small(path, buf, sizeof(buf));
    if (rc < 0)
        return rc;
    /*
     * "pid (comm) S ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime cutime cstime priority nice threads
     * itrealvalue starttime …".  comm may hold spaces and parentheses, so
     * fields are counted from the last ')'.
     */
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return KB_EPARSE;
    p += 2;
    for (int field = 3; field <= 22; field++) {
        char *end;
        if (field == 3) {
            if (state != NULL)
                *state = *p;
        } else if (field == 5 || field == 22) {
            errno = 0;
            unsigned long long v = strtoull(p, &end, 10);
            if (errno != 0 || end == p)
                return KB_EPARSE;
            if (field == 5 && pgrp != NULL)
                *pgrp = (int)v;
            if (field == 22 && starttime != NULL)
                *starttime = (uint64_t)v;
        }
        p = strchr(p, ' ');
        if (p == NULL)
            return field == 22 ? 0 : KB_EPARSE;
        p++;
    }
    return 0;
}

void
kb__proc_boot_id(char *out, size_t outlen)
{
    char buf[64];

    out[0] = '\0';
    if (read_small("/proc/sys/kernel/random/boot_id", buf, sizeof(buf)) < 0)
        return;
    buf[strcspn(buf, "\n")] = '\0';
    snprintf(out, outlen, "%s", buf);
}

bool
kb__proc_same(int pid, uint64_t starttime, bool *zombie)
{
    uint64_t st;
    char state;

    if (kb__proc_stat(pid, &state, NULL, &st) < 0 || st != starttime)
        return false;
    if (zombie != NULL)
        *zombie = state == 'Z' || state == 'X';
    return true;
}
