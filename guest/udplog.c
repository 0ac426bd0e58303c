/*
 * vmnap-udplog: the guest's UDP receiver. Listens on one dual-stack UDP socket
 * (IPv4 and IPv6) on the port given as argv[1] and writes every datagram's payload,
 * from any sender, as one line "udp: PAYLOAD" to standard output (the serial console
 * under the guest's init), in a single write(2) per datagram. One trailing "\n" (or
 * "\r\n") is dropped; printable ASCII except backslash is kept as it is; every other
 * byte, including backslash and newlines inside the payload, is written as \xNN, so
 * one datagram is always one line.
 * Payloads longer than 4096 bytes are cut there and the line ends with "...".
 * Built statically by build-image.sh (cc -static -Os).
 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 9000;
	int fd = socket(AF_INET6, SOCK_DGRAM, 0);
	int off = 0;
	struct sockaddr_in6 sa;
	static unsigned char buf[4097];
	static char line[4 * 4097 + 16];

	if (fd < 0) {
		perror("vmnap-udplog: socket");
		return 1;
	}
	setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
	/* Room for a burst: a guest woken by vmnap gets what was held for it at once, and
	 * writing each line to the serial console under TCG is slow. */
	int rcvbuf = 8 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
	memset(&sa, 0, sizeof sa);
	sa.sin6_family = AF_INET6;
	sa.sin6_port = htons((unsigned short)port);
	sa.sin6_addr = in6addr_any;
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		perror("vmnap-udplog: bind");
		return 1;
	}
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof buf, MSG_TRUNC);
		size_t len, i, o = 0;
		int cut = 0;

		if (n < 0)
			continue;
		len = (size_t)n;
		if (len > sizeof buf - 1) {
			len = sizeof buf - 1;
			cut = 1;
		}
		if (!cut && len > 0 && buf[len - 1] == '\n') {
			len--;
			if (len > 0 && buf[len - 1] == '\r')
				len--;
		}
		memcpy(line, "udp: ", 5);
		o = 5;
		for (i = 0; i < len; i++) {
			unsigned char c = buf[i];
			if (c >= 0x20 && c < 0x7f && c != '\\') {
				line[o++] = (char)c;
			} else {
				o += (size_t)sprintf(line + o, "\\x%02x", c);
			}
		}
		if (cut) {
			memcpy(line + o, "...", 3);
			o += 3;
		}
		line[o++] = '\n';
		if (write(1, line, o) < 0)
			return 1;
	}
}
