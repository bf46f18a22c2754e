/* orb8-victim for container images: makes alert-listed syscalls harmlessly
 * (each fails or changes nothing), prints its pid, exits. The same calls as
 * orb8_dev/victim.py, for images without Python.
 *   orb8-victim [ptrace] [mount] [unshare]      (default: all three) */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <unistd.h>

static int wanted(int argc, char **argv, const char *name) {
  if (argc < 2) return 1;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], name) == 0) return 1;
  return 0;
}

int main(int argc, char **argv) {
  prctl(PR_SET_NAME, "orb8-victim", 0, 0, 0);
  if (wanted(argc, argv, "mount"))
    mount("/nonexistent-orb8-src", "/nonexistent-orb8-dst", "orb8bogus", 0, NULL);
  if (wanted(argc, argv, "ptrace")) ptrace(PTRACE_PEEKDATA, 1, NULL, NULL);
  if (wanted(argc, argv, "unshare")) unshare(0);
  printf("%d\n", (int)getpid());
  return 0;
}
