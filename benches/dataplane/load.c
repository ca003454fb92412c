/* Load generator for benches/dataplane.rs: the kernel path dominates.
 *   load udp ADDR PORT SECS   64-byte datagrams from one socket (one flow);
 *                             prints "PPS n CPU m": per second of wall time,
 *                             and per second of this process's CPU time
 *                             (user + system: the output path runs in the
 *                             sender's system calls), which other load on a
 *                             shared machine disturbs much less
 *   load tcp ADDR PORT SECS   connect, close with a reset (no TIME_WAIT);
 *                             prints "CPS n CPU m"
 *   load serve PORT           TCP listener that accepts and closes; READY
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu(void) {
	struct rusage r;
	getrusage(RUSAGE_SELF, &r);
	return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
	if (argc >= 3 && !strcmp(argv[1], "serve")) {
		int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
		if (bind(s, (void *)&a, sizeof a) || listen(s, 4096)) { perror("listen"); return 1; }
		printf("READY\n");
		fflush(stdout);
		for (;;) {
			int c = accept(s, 0, 0);
			if (c >= 0) close(c);
		}
	}
	if (argc < 5) { fprintf(stderr, "usage: load udp|tcp ADDR PORT SECS | serve PORT\n"); return 2; }
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
	inet_pton(AF_INET, argv[2], &a.sin_addr);
	double secs = atof(argv[4]), start = now(), end = start + secs, cpu0 = cpu();
	long n = 0;
	if (!strcmp(argv[1], "udp")) {
		int s = socket(AF_INET, SOCK_DGRAM, 0);
		char buf[64] = {0};
		while (1) {
			for (int i = 0; i < 256; i++)
				if (sendto(s, buf, sizeof buf, 0, (void *)&a, sizeof a) == sizeof buf) n++;
			if (now() >= end) break;
		}
		printf("PPS %.0f CPU %.0f\n", n / (now() - start), n / (cpu() - cpu0));
		return 0;
	}
	struct linger l = {1, 0};
	while (now() < end) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
		if (connect(s, (void *)&a, sizeof a) == 0) n++;
		close(s);
	}
	printf("CPS %.0f CPU %.0f\n", n / (now() - start), n / (cpu() - cpu0));
	return 0;
}
