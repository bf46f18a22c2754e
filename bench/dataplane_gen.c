/* Load generator for `make bench-dataplane`.
 *
 *   orb8-gen udp <dst-ipv4> <port> <seconds> <payload-bytes>
 *       sends UDP datagrams with sendmmsg() in batches for a fixed time and
 *       prints {"sent": N, "seconds": S, "packets_per_second": R}
 *   orb8-gen getpid <calls>
 *       makes raw getpid syscalls and prints {"calls": N, "ns_per_call": X}
 *   orb8-gen read <calls>
 *       1-byte read()s from /dev/zero; prints {"calls": N, "ns_per_call": X}
 *   orb8-gen flows <dst-ipv4> <first-port> <seconds> <flows>
 *       64-byte UDP frames round robin over <flows> distinct 5-tuples (sockets
 *       bound to successive source ports, each sending to successive
 *       destination ports); prints the same fields as udp plus "flows"
 *   orb8-gen rr-server <port>
 *       TCP echo of 1-byte requests, one client, until it closes
 *   orb8-gen rr <dst-ipv4> <port> <seconds>
 *       1-byte TCP request/response round trips; prints p50/p99 in us
 *   orb8-gen dns-server <port>
 *       a resolver stand-in on UDP: answers every query with its question
 *       and one A record (a compression pointer to the name, as real
 *       servers write), until killed
 *   orb8-gen dns <dst-ipv4> <port> <seconds>
 *       A queries for one cluster name, one at a time, each waiting for its
 *       answer; prints {"queries", "answers", "lost", "queries_per_second", ...}
 *   orb8-gen crr-server <port>
 *       accepts TCP connections and closes each at once (the server closes
 *       first, so TIME_WAIT stays on its side), until killed
 *   orb8-gen crr <dst-ipv4> <port> <seconds>
 *       connect, wait for the server's FIN, close; prints connections/s
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

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int udp(const char *dst, int port, double seconds, int size)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	static char payload[65536];
	struct mmsghdr msgs[BATCH];
	struct iovec iov = { .iov_base = payload, .iov_len = (size_t)size };
	unsigned long long sent = 0;
	double start, end, cpu0;
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
	cpu0 = cpu_s();
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
	/* per CPU-second of this thread: egress tc programs run in its context,
	 * and time spent preempted by other load does not count */
	printf("{\"sent\": %llu, \"seconds\": %.6f, \"packets_per_second\": %.1f, "
	       "\"packets_per_cpu_second\": %.1f}\n",
	       sent, now_s() - start, sent / (now_s() - start), sent / (cpu_s() - cpu0));
	close(fd);
	return 0;
}

#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/resource.h>

/* ns_per_call is wall time; cpu_ns_per_call is this thread's CPU time (user +
 * kernel, where tracepoint programs run), which time spent preempted by other
 * load on a busy machine does not inflate. */
static void print_calls(long calls, double wall, double cpu)
{
	printf("{\"calls\": %ld, \"ns_per_call\": %.2f, \"cpu_ns_per_call\": %.2f}\n", calls,
	       wall * 1e9 / calls, cpu * 1e9 / calls);
}

static int read_loop(long calls)
{
	double start, elapsed, cpu0;
	char c;
	long i;
	int fd = open("/dev/zero", O_RDONLY);

	if (fd < 0) {
		perror("open /dev/zero");
		return 1;
	}
	start = now_s();
	cpu0 = cpu_s();
	for (i = 0; i < calls; i++)
		if (read(fd, &c, 1) != 1)
			return 1;
	elapsed = now_s() - start;
	print_calls(calls, elapsed, cpu_s() - cpu0);
	close(fd);
	return 0;
}

#define PORTS_PER_SOCK 40000

static int flows(const char *dst, int port0, double seconds, int nflows)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	struct sockaddr_in *dsts;
	struct mmsghdr msgs[BATCH];
	struct iovec iov;
	static char payload[22];
	unsigned long long sent = 0;
	int nsock, *fds, i, k, next = 0;
	double start, end, cpu0;
	struct rlimit rl = { 1 << 16, 1 << 16 };

	if (nflows < 1 || inet_pton(AF_INET, dst, &addr.sin_addr) != 1) {
		fprintf(stderr, "bad arguments\n");
		return 2;
	}
	setrlimit(RLIMIT_NOFILE, &rl);
	nsock = (nflows + PORTS_PER_SOCK - 1) / PORTS_PER_SOCK;
	fds = calloc(nsock, sizeof(*fds));
	dsts = calloc(PORTS_PER_SOCK, sizeof(*dsts));
	if (!fds || !dsts)
		return 1;
	for (i = 0; i < PORTS_PER_SOCK; i++) {
		dsts[i] = addr;
		dsts[i].sin_port = htons(port0 + i);
	}
	for (k = 0; k < nsock; k++) {
		fds[k] = socket(AF_INET, SOCK_DGRAM, 0);
		if (fds[k] < 0) {
			perror("socket");
			return 1;
		}
	}
	iov.iov_base = payload;
	iov.iov_len = sizeof(payload);
	memset(msgs, 0, sizeof(msgs));
	start = now_s();
	cpu0 = cpu_s();
	end = start + seconds;
	while (now_s() < end) {
		/* one batch per socket turn; flow index runs over all nflows */
		int sock = next / PORTS_PER_SOCK, n;

		for (i = 0; i < BATCH; i++) {
			int port = (next + i) % nflows;

			if (port / PORTS_PER_SOCK != sock)
				break;
			msgs[i].msg_hdr.msg_iov = &iov;
			msgs[i].msg_hdr.msg_iovlen = 1;
			msgs[i].msg_hdr.msg_name = &dsts[port % PORTS_PER_SOCK];
			msgs[i].msg_hdr.msg_namelen = sizeof(dsts[0]);
		}
		n = sendmmsg(fds[sock], msgs, i, 0);
		if (n > 0) {
			sent += n;
			next = (next + n) % nflows;
		} else if (errno != ECONNREFUSED && errno != ENOBUFS && errno != EAGAIN) {
			perror("sendmmsg");
			return 1;
		}
	}
	printf("{\"sent\": %llu, \"seconds\": %.6f, \"packets_per_second\": %.1f, "
	       "\"packets_per_cpu_second\": %.1f, \"flows\": %d}\n",
	       sent, now_s() - start, sent / (now_s() - start), sent / (cpu_s() - cpu0), nflows);
	return 0;
}

static int rr_server(int port)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, lfd, fd;
	char c;

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 1) < 0) {
		perror("bind/listen");
		return 1;
	}
	printf("{\"listening\": true}\n");
	fflush(stdout);
	fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		return 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	while (read(fd, &c, 1) == 1)
		if (write(fd, &c, 1) != 1)
			break;
	close(fd);
	close(lfd);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int rr(const char *dst, int port, double seconds)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	size_t cap = 1 << 20, n = 0;
	double *rtt = malloc(cap * sizeof(double)), start, end, t0;
	int one = 1, fd;
	char c = 'x';

	if (!rtt || inet_pton(AF_INET, dst, &addr.sin_addr) != 1)
		return 2;
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		perror("connect");
		return 1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	start = now_s();
	end = start + seconds;
	while ((t0 = now_s()) < end && n < cap) {
		if (write(fd, &c, 1) != 1 || read(fd, &c, 1) != 1) {
			perror("rr");
			return 1;
		}
		rtt[n++] = now_s() - t0;
	}
	close(fd);
	if (n == 0)
		return 1;
	qsort(rtt, n, sizeof(double), cmp_double);
	printf("{\"round_trips\": %zu, \"p50_us\": %.3f, \"p99_us\": %.3f}\n", n,
	       rtt[n / 2] * 1e6, rtt[(n * 99) / 100] * 1e6);
	return 0;
}

#define DNS_NAME "cart.shop.svc.cluster.local"

static int dns_server(int port)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) }, peer;
	/* one A record: pointer to the question's name, type A, class IN, TTL 30, 10.0.0.1 */
	static const unsigned char record[] = { 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4,
						10, 0, 0, 1 };
	unsigned char buf[512 + sizeof(record)];
	socklen_t plen;
	ssize_t n;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		perror("dns-server bind");
		return 1;
	}
	printf("{\"listening\": true}\n");
	fflush(stdout);
	for (;;) {
		plen = sizeof(peer);
		n = recvfrom(fd, buf, 512, 0, (struct sockaddr *)&peer, &plen);
		if (n < 12)
			continue;
		buf[2] |= 0x80; /* QR */
		buf[3] = 0x80;  /* RA, NOERROR */
		buf[6] = 0;
		buf[7] = 1; /* ANCOUNT */
		memcpy(buf + n, record, sizeof(record));
		sendto(fd, buf, n + sizeof(record), 0, (struct sockaddr *)&peer, plen);
	}
}

static size_t dns_query(unsigned char *buf, unsigned short id)
{
	const char *p = DNS_NAME;
	size_t n = 12;

	memset(buf, 0, 12);
	buf[0] = id >> 8;
	buf[1] = id & 0xff;
	buf[2] = 0x01; /* RD */
	buf[5] = 1;    /* QDCOUNT */
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);

		buf[n++] = (unsigned char)len;
		memcpy(buf + n, p, len);
		n += len;
		p += len + (dot ? 1 : 0);
	}
	buf[n++] = 0; /* root */
	buf[n++] = 0;
	buf[n++] = 1; /* A */
	buf[n++] = 0;
	buf[n++] = 1; /* IN */
	return n;
}

static int dns_client(const char *dst, int port, double seconds)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct timeval tv = { 0, 200000 };
	unsigned long long queries = 0, answers = 0, lost = 0;
	unsigned char q[512], a[1024];
	unsigned short id = 1;
	double start, end, cpu0;
	int fd;

	if (inet_pton(AF_INET, dst, &addr.sin_addr) != 1)
		return 2;
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
		perror("dns socket");
		return 1;
	}
	start = now_s();
	cpu0 = cpu_s();
	end = start + seconds;
	while (now_s() < end) {
		size_t len = dns_query(q, ++id);

		if (send(fd, q, len, 0) != (ssize_t)len) {
			perror("dns send");
			return 1;
		}
		queries++;
		/* wait for this query's answer; a timeout counts it lost */
		for (;;) {
			ssize_t n = recv(fd, a, sizeof(a), 0);

			if (n < 0) {
				lost++;
				break;
			}
			if (n >= 12 && a[0] == q[0] && a[1] == q[1]) {
				answers++;
				break;
			}
		}
	}
	printf("{\"queries\": %llu, \"answers\": %llu, \"lost\": %llu, \"seconds\": %.6f, "
	       "\"queries_per_second\": %.1f, \"queries_per_cpu_second\": %.1f}\n",
	       queries, answers, lost, now_s() - start, answers / (now_s() - start),
	       answers / (cpu_s() - cpu0));
	close(fd);
	return 0;
}

static int crr_server(int port)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, lfd, fd;

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 1024) < 0) {
		perror("bind/listen");
		return 1;
	}
	printf("{\"listening\": true}\n");
	fflush(stdout);
	for (;;) {
		fd = accept(lfd, NULL, NULL);
		if (fd >= 0)
			close(fd);
	}
}

static int crr(const char *dst, int port, double seconds)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	unsigned long long made = 0;
	double start, end, cpu0;
	char c;

	if (inet_pton(AF_INET, dst, &addr.sin_addr) != 1)
		return 2;
	start = now_s();
	cpu0 = cpu_s();
	end = start + seconds;
	while (now_s() < end) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
			perror("crr connect");
			return 1;
		}
		/* the server closes first: read() returns 0 at its FIN */
		if (read(fd, &c, 1) != 0) {
			perror("crr read");
			return 1;
		}
		close(fd);
		made++;
	}
	printf("{\"connections\": %llu, \"seconds\": %.6f, \"connections_per_second\": %.1f, "
	       "\"connections_per_cpu_second\": %.1f}\n",
	       made, now_s() - start, made / (now_s() - start), made / (cpu_s() - cpu0));
	return 0;
}

static int getpid_loop(long calls)
{
	double start, elapsed, cpu0;
	long i;

	start = now_s();
	cpu0 = cpu_s();
	for (i = 0; i < calls; i++)
		syscall(SYS_getpid);
	elapsed = now_s() - start;
	print_calls(calls, elapsed, cpu_s() - cpu0);
	return 0;
}

/* getppid() (an alert-listed syscall in the alert-rate bench) at a steady
 * RATE per second for SECONDS: each call waits for its slot on the
 * monotonic clock (vDSO, no syscall), so a preempted loop catches up in a
 * burst, as a real process would. */
static int paced_loop(double rate, double seconds)
{
	double start = now_s(), elapsed;
	long i, calls = (long)(rate * seconds);

	for (i = 0; i < calls; i++) {
		double slot = start + i / rate;

		while (now_s() < slot)
			;
		syscall(SYS_getppid);
	}
	elapsed = now_s() - start;
	printf("{\"calls\": %ld, \"seconds\": %.6f}\n", calls, elapsed);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "paced"))
		return paced_loop(atof(argv[2]), atof(argv[3]));
	if (argc == 6 && !strcmp(argv[1], "udp"))
		return udp(argv[2], atoi(argv[3]), atof(argv[4]), atoi(argv[5]));
	if (argc == 3 && !strcmp(argv[1], "getpid"))
		return getpid_loop(atol(argv[2]) > 0 ? atol(argv[2]) : 1);
	if (argc == 3 && !strcmp(argv[1], "read"))
		return read_loop(atol(argv[2]) > 0 ? atol(argv[2]) : 1);
	if (argc == 6 && !strcmp(argv[1], "flows"))
		return flows(argv[2], atoi(argv[3]), atof(argv[4]), atoi(argv[5]));
	if (argc == 3 && !strcmp(argv[1], "rr-server"))
		return rr_server(atoi(argv[2]));
	if (argc == 5 && !strcmp(argv[1], "rr"))
		return rr(argv[2], atoi(argv[3]), atof(argv[4]));
	if (argc == 3 && !strcmp(argv[1], "dns-server"))
		return dns_server(atoi(argv[2]));
	if (argc == 5 && !strcmp(argv[1], "dns"))
		return dns_client(argv[2], atoi(argv[3]), atof(argv[4]));
	if (argc == 3 && !strcmp(argv[1], "crr-server"))
		return crr_server(atoi(argv[2]));
	if (argc == 5 && !strcmp(argv[1], "crr"))
		return crr(argv[2], atoi(argv[3]), atof(argv[4]));
	fprintf(stderr, "usage: %s udp DST PORT SECONDS SIZE | getpid CALLS | read CALLS |"
		" flows DST PORT0 SECONDS N | rr-server PORT | rr DST PORT SECONDS |"
		" paced RATE SECONDS | dns-server PORT | dns DST PORT SECONDS |"
		" crr-server PORT | crr DST PORT SECONDS\n", argv[0]);
	return 2;
}
