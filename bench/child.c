/* bench-child: the one supervised program of every benchmark, for all three supervisors.
 *
 * It announces itself on the harness's SOCK_SEQPACKET socket as soon as it runs ("A pid ns",
 * ns = CLOCK_MONOTONIC, the clock of Python's time.monotonic), so the harness counts processes
 * exactly and without polling; its exit shows as the connection's EOF. Costs no shell and no
 * interpreter: one exec, one connect.
 *
 *   bench-child SOCK idle
 *       announce, then block until the harness closes the socket (or a signal kills us).
 *   bench-child SOCK write LINES batch|line
 *       announce, wait for the harness's "g", write LINES lines of 100 bytes to stdout
 *       ("<pid:7> <seq:10> xxx...\n"), 40 lines per write() (4000 bytes <= PIPE_BUF, so atomic in
 *       a pipe) or one write() per line; then send "D pid ns" and block as in idle.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LINE 100
#define BATCH_LINES 40

static unsigned long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
}

static int say(int fd, char kind) {
    char msg[64];
    int len = snprintf(msg, sizeof msg, "%c %d %llu", kind, (int)getpid(), now_ns());
    return send(fd, msg, (size_t)len, MSG_NOSIGNAL) == len ? 0 : -1;
}

static int write_all(const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(1, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int write_lines(long lines, int batched) {
    static char buf[LINE * BATCH_LINES];
    int pid = (int)getpid();
    int per_write = batched ? BATCH_LINES : 1;
    for (long seq = 0; seq < lines;) {
        int count = 0;
        for (; count < per_write && seq < lines; count++, seq++) {
            char *line = buf + count * LINE;
            int head = snprintf(line, LINE, "%07d %010ld ", pid, seq);
            memset(line + head, 'x', (size_t)(LINE - 1 - head));
            line[LINE - 1] = '\n';
        }
        if (write_all(buf, (size_t)count * LINE) < 0) return -1;
    }
    return 0;
}

static void wait_for_close(int fd) {
    char byte;
    for (;;) {
        ssize_t n = recv(fd, &byte, 1, 0);
        if (n == 0 || (n < 0 && errno != EINTR)) return;
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s SOCK idle | SOCK write LINES batch|line\n", argv[0]);
        return 2;
    }
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (fd < 0 || strlen(argv[1]) >= sizeof addr.sun_path) return 2;
    strcpy(addr.sun_path, argv[1]);
    while (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        if (errno != EINTR) return 3;
    }
    if (say(fd, 'A') < 0) return 3;
    if (strcmp(argv[2], "write") == 0 && argc == 5) {
        char go;
        ssize_t n;
        while ((n = recv(fd, &go, 1, 0)) < 0 && errno == EINTR) {
        }
        if (n != 1) return 0;
        if (write_lines(atol(argv[3]), strcmp(argv[4], "batch") == 0) < 0) return 4;
        say(fd, 'D');
    }
    wait_for_close(fd);
    return 0;
}
