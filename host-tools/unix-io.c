/* SPDX-License-Identifier: MIT */
/*
 * Unix socket I/O with deadlines (see unix-io.h).
 */
#include "unix-io.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "vs-error.h"

gint64 vs_deadline_in(gint64 timeout_ms) {
  return g_get_monotonic_time() + timeout_ms * 1000;
}

/* Milliseconds left until @deadline_us for poll(), rounded up, >= 0. */
static int ms_left(gint64 deadline_us) {
  gint64 left = deadline_us - g_get_monotonic_time();

  if (left <= 0)
    return 0;
  return (int)MIN((left + 999) / 1000, G_MAXINT);
}

/* Waits for @events on @fd. Returns 1 when ready (or when poll() failed:
 * the caller's next call reports the error), 0 at the deadline. EINTR just
 * polls again with what is left. */
static int wait_fd(int fd, short events, gint64 deadline_us) {
  struct pollfd pfd = {.fd = fd, .events = events};

  for (;;) {
    int rc = poll(&pfd, 1, ms_left(deadline_us));

    if (rc > 0)
      return 1;
    if (rc == 0)
      return 0;
    if (errno != EINTR)
      return 1;
  }
}

int vs_unix_connect(const char *path, gint64 deadline_us, GError **error) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  g_autofree char *dir = NULL;
  int dirfd = -1, fd, e = 0;

  if (strlen(path) < sizeof(addr.sun_path)) {
    strcpy(addr.sun_path, path);
  } else {
    /* libvirt's channel paths grow with the domain name; sun_path does
     * not. Reach the socket through its directory's fd. */
    g_autofree char *base = g_path_get_basename(path);

    dir = g_path_get_dirname(path);
    dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
      e = errno;
      g_set_error(error, VS_ERROR, VS_ERROR_FAILED, "%s: %s", path, g_strerror(e));
      return -1;
    }
    if ((gsize)g_snprintf(addr.sun_path, sizeof(addr.sun_path), "/proc/self/fd/%d/%s", dirfd,
                          base) >= sizeof(addr.sun_path)) {
      close(dirfd);
      g_set_error(error, VS_ERROR, VS_ERROR_FAILED, "%s: %s", path, g_strerror(ENAMETOOLONG));
      return -1;
    }
  }
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    e = errno;
    goto fail;
  }
  for (;;) {
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
      break;
    e = errno;
    if (e == EINTR)
      continue;
    if (e == EAGAIN) {
      /* The listener's backlog is full (Linux does not queue us): try
       * again shortly, within the deadline. */
      if (g_get_monotonic_time() >= deadline_us)
        goto timeout;
      g_usleep(10000);
      continue;
    }
    if (e == EINPROGRESS) {
      socklen_t len = sizeof(e);

      if (!wait_fd(fd, POLLOUT, deadline_us))
        goto timeout;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
        e = errno;
      if (e == 0)
        break;
    }
    goto fail;
  }
  if (dirfd >= 0)
    close(dirfd);
  return fd;

timeout:
  g_set_error(error, VS_ERROR, VS_ERROR_TIMEOUT, "%s: timed out connecting", path);
  goto out;
fail:
  g_set_error(error, VS_ERROR, VS_ERROR_FAILED, "%s: %s", path, g_strerror(e));
out:
  if (fd >= 0)
    close(fd);
  if (dirfd >= 0)
    close(dirfd);
  return -1;
}

gboolean vs_write_all(int fd, const void *data, gsize len, gint64 deadline_us, GError **error) {
  const guint8 *p = data;

  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

    if (n > 0) {
      p += n;
      len -= (gsize)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_fd(fd, POLLOUT, deadline_us)) {
        g_set_error_literal(error, VS_ERROR, VS_ERROR_TIMEOUT,
                            "timed out writing (the peer does not read)");
        return FALSE;
      }
      continue;
    }
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      g_set_error_literal(error, VS_ERROR, VS_ERROR_CLOSED, "the peer closed the connection");
      return FALSE;
    }
    g_set_error(error, VS_ERROR, VS_ERROR_FAILED, "write: %s", g_strerror(n < 0 ? errno : EIO));
    return FALSE;
  }
  return TRUE;
}

gboolean vs_read_object(int fd, VsJsonStream *stream, gint64 deadline_us, JsonNode **out,
                        GError **error) {
  guint8 buf[16384];

  for (;;) {
    g_autoptr(GError) local = NULL;
    ssize_t n;

    if (vs_json_stream_next(stream, out, &local))
      return TRUE;
    if (local) {
      g_propagate_error(error, g_steal_pointer(&local));
      return FALSE;
    }
    n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      vs_json_stream_feed(stream, buf, (gsize)n);
      continue;
    }
    if (n == 0) {
      g_set_error_literal(error, VS_ERROR, VS_ERROR_CLOSED, "the peer closed the connection");
      return FALSE;
    }
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_fd(fd, POLLIN, deadline_us)) {
        g_set_error_literal(error, VS_ERROR, VS_ERROR_TIMEOUT, "timed out waiting for an answer");
        return FALSE;
      }
      continue;
    }
    if (errno == ECONNRESET) {
      g_set_error_literal(error, VS_ERROR, VS_ERROR_CLOSED, "the peer closed the connection");
      return FALSE;
    }
    g_set_error(error, VS_ERROR, VS_ERROR_FAILED, "read: %s", g_strerror(errno));
    return FALSE;
  }
}

char *vs_json_to_string(JsonNode *node) {
  g_autoptr(JsonGenerator) gen = json_generator_new();

  json_generator_set_root(gen, node);
  return json_generator_to_data(gen, NULL);
}

JsonObject *vs_json_request_new(const char *command, JsonObject *arguments) {
  JsonObject *request = json_object_new();

  json_object_set_string_member(request, "execute", command);
  if (arguments)
    json_object_set_object_member(request, "arguments", json_object_ref(arguments));
  return request;
}
