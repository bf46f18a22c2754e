/* Load generator for `make bench-dataplane`.
 *
 *   orb8-gen udp <dst-ipv4> <port> <seconds> <payload-bytes>
 *       sends UDP datagrams with sendmmsg() in batches for a fixed time and
 *       prints {"sent": N, "seconds": S, "packets_per_second": R}
 *   orb8-gen getpid <calls>
 *       makes raw getpid syscalls and prints {"calls": N, "ns_per_call": X}
 *
 * C rather than Python so that the generator's own per-packet and per-call
 * cost is small next to the probe cost being measured. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int udp(const char *dst, int port, double seconds, int size)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	static char payload[65536];
	struct mmsghdr msgs[BATCH];
	struct iovec iov = { .iov_base = payload, .iov_len = (size_t)size };
	unsigned long long sent = 0;
	double start, end;
	int fd, i;

	if (size < 0 || size > (int)sizeof(payload) || inet_pton(AF_INET, dst, &addr.sin_addr) != 1) {
		fprintf(stderr, "bad arguments\n");
		return 2;
	}
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		perror("socket/connect");
		return 1;
	}
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	start = now_s();
	end = start + seconds;
	/* the time check every batch bounds the loop */
	while (now_s() < end) {
		int n = sendmmsg(fd, msgs, BATCH, 0);

		if (n > 0)
			sent += n;
		else if (errno != ECONNREFUSED && errno != ENOBUFS && errno != EAGAIN) {
			perror("sendmmsg");
			return 1;
		}
	}
	printf("{\"sent\": %llu, \"seconds\": %.6f, \"packets_per_second\": %.1f}\n", sent,
	       now_s() - start, sent / (now_s() - start));
	close(fd);
	return 0;
}

static int getpid_loop(long calls)
{
	double start, elapsed;
	long i;

	start = now_s();
	for (i = 0; i < calls; i++)
		syscall(SYS_getpid);
	elapsed = now_s() - start;
	printf("{\"calls\": %ld, \"ns_per_call\": %.2f}\n", calls, elapsed * 1e9 / calls);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 6 && !strcmp(argv[1], "udp"))
		return udp(argv[2], atoi(argv[3]), atof(argv[4]), atoi(argv[5]));
	if (argc == 3 && !strcmp(argv[1], "getpid"))
		return getpid_loop(atol(argv[2]) > 0 ? atol(argv[2]) : 1);
	fprintf(stderr, "usage: %s udp DST PORT SECONDS SIZE | getpid CALLS\n", argv[0]);
	return 2;
}
