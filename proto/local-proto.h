/* SPDX-License-Identifier: MIT */
/*
 * The local shrink protocol between libshrink clients and shrinkd.
 *
 * Transport: AF_UNIX SOCK_SEQPACKET, one message per packet, at most
 * PROTO_MSG_MAX bytes. Every integer is little-endian whatever the host.
 * Every message starts with an 8-byte header:
 *
 *   u8 version   (PROTO_VERSION; a HELLO may carry any version)
 *   u8 type      (proto_msg_type)
 *   u16 flags    (reserved, must be 0)
 *   u32 length   (whole message, header included; must equal the packet size)
 *
 * Strings are a u16 byte count (terminating NUL included) followed by the
 * bytes; the last byte must be NUL and no other may be. Text payloads of
 * CONTROL messages use a u32 count the same way. Reserved fields must be 0
 * so that they can be given a meaning later.
 *
 * Decoding validates everything before the caller sees the message: an
 * unknown type, a wrong length, an oversize or unterminated string, a
 * reserved field that is not zero or a value out of range is refused with a
 * typed proto_error. Nothing is allocated: decoded strings point into the
 * caller's buffer.
 *
 * This header is libc-only: shared by libshrink (no GLib), the agent and the
 * host tools.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PROTO_VERSION 1          /* the version this code speaks */
#define PROTO_VERSION_MIN 1      /* the oldest version it still accepts */
#define PROTO_HEADER_SIZE 8
#define PROTO_MSG_MAX 65536      /* bytes in one packet, header included */
#define PROTO_NAME_MAX 64        /* bytes in a name, terminating NUL included */
#define PROTO_ERROR_TEXT_MAX 256 /* bytes in an error text, NUL included */
/* bytes of text in one CONTROL or CONTROL_REPLY message, NUL included */
#define PROTO_CONTROL_TEXT_MAX (PROTO_MSG_MAX - PROTO_HEADER_SIZE - 12)
#define PROTO_PRIORITY_MIN 0
#define PROTO_PRIORITY_DEFAULT 50
#define PROTO_PRIORITY_MAX 100 /* higher: asked first and for a larger share */
#define PROTO_DEADLINE_MAX_MS 600000

typedef enum {
  PROTO_MSG_HELLO = 1,         /* client -> agent: first message, version range */
  PROTO_MSG_WELCOME = 2,       /* agent -> client: chosen version */
  PROTO_MSG_REGISTER = 3,      /* client -> agent: a new shrinker */
  PROTO_MSG_UNREGISTER = 4,    /* client -> agent: a shrinker goes away */
  PROTO_MSG_ESTIMATE = 5,      /* client -> agent: new reclaimable estimate */
  PROTO_MSG_SHRINK = 6,        /* agent -> client: free memory */
  PROTO_MSG_SHRINK_DONE = 7,   /* client -> agent: what a shrinker freed */
  PROTO_MSG_RELIEF = 8,        /* agent -> client: pressure is over */
  PROTO_MSG_ERROR = 9,         /* either way: a typed error */
  PROTO_MSG_CONTROL = 10,      /* shrinkctl -> agent: a JSON command */
  PROTO_MSG_CONTROL_REPLY = 11 /* agent -> shrinkctl: JSON answer, maybe chunked */
} proto_msg_type;

#define PROTO_MSG_TYPE_LAST PROTO_MSG_CONTROL_REPLY

/* Typed errors: carried in ERROR messages and returned by the decoder. */
typedef enum {
  PROTO_ERR_NONE = 0,
  PROTO_ERR_VERSION = 1,    /* no common protocol version */
  PROTO_ERR_TYPE = 2,       /* unknown message type */
  PROTO_ERR_LENGTH = 3,     /* length field or packet size wrong */
  PROTO_ERR_STRING = 4,     /* string oversize, empty, unterminated or with NUL inside */
  PROTO_ERR_RANGE = 5,      /* a value out of its range */
  PROTO_ERR_RESERVED = 6,   /* a reserved field or flag is not zero */
  PROTO_ERR_STATE = 7,      /* message not valid now (e.g. REGISTER before HELLO) */
  PROTO_ERR_DUPLICATE = 8,  /* shrinker id already registered on this connection */
  PROTO_ERR_UNKNOWN_ID = 9, /* no shrinker with that id on this connection */
  PROTO_ERR_LIMIT = 10,     /* too many shrinkers or messages */
  PROTO_ERR_PERMISSION = 11,/* the peer may not do that */
  PROTO_ERR_COMMAND = 12,   /* a CONTROL command failed (text says why) */
} proto_error;

#define PROTO_ERR_LAST PROTO_ERR_COMMAND

typedef enum {
  PROTO_LEVEL_SOFT = 0, /* pressure is building: free what is cheap, may defer */
  PROTO_LEVEL_HARD = 1, /* free now, or the balloon stalls */
} proto_level;

/* Why a round runs; extra information, a client may ignore it. */
typedef enum {
  PROTO_REASON_UNSPECIFIED = 0,
  PROTO_REASON_MANUAL = 1,    /* an operator's shrinkctl shrink */
  PROTO_REASON_BALLOON = 2,   /* the balloon's target fell */
  PROTO_REASON_MIGRATION = 3, /* a free-page hint / live migration */
  PROTO_REASON_PRESSURE = 4,  /* PSI or another memory-pressure signal */
  PROTO_REASON_HOST = 5,      /* a request from the host over the channel */
} proto_reason;

#define PROTO_REASON_LAST PROTO_REASON_HOST

#define PROTO_REGISTER_HAS_ESTIMATE 0x1u /* estimate_bytes is meaningful */
#define PROTO_DONE_TRIMMED 0x1u          /* the client ran malloc_trim after freeing */
#define PROTO_CONTROL_MORE 0x1u          /* more CONTROL_REPLY chunks follow */

typedef struct {
  uint16_t min_version;
  uint16_t max_version;
  const char *name; /* the client program's name, for status and logs */
} proto_hello;

typedef struct {
  uint16_t version;       /* the version both now speak */
  uint32_t max_shrinkers; /* the most this connection may register */
} proto_welcome;

typedef struct {
  uint32_t id;       /* chosen by the client, unique on its connection */
  uint16_t priority; /* PROTO_PRIORITY_MIN..PROTO_PRIORITY_MAX */
  uint16_t flags;    /* PROTO_REGISTER_* */
  uint64_t estimate_bytes;
  const char *name;
} proto_register;

typedef struct {
  uint32_t id;
} proto_unregister;

typedef struct {
  uint32_t id;
  uint32_t flags; /* PROTO_REGISTER_HAS_ESTIMATE, or 0 to clear the estimate */
  uint64_t estimate_bytes;
} proto_estimate;

typedef struct {
  uint64_t round_id;
  uint32_t id;    /* the shrinker asked */
  uint8_t level;  /* proto_level */
  uint8_t reason; /* proto_reason */
  uint64_t target_bytes;
  uint32_t deadline_ms; /* time left to answer, 1..PROTO_DEADLINE_MAX_MS */
} proto_shrink;

typedef struct {
  uint64_t round_id;
  uint32_t id;
  uint32_t flags; /* PROTO_DONE_* */
  uint64_t freed_bytes;
  uint32_t elapsed_us; /* time spent in the callback */
} proto_shrink_done;

typedef struct {
  uint64_t round_id; /* the round whose pressure is over, or 0 */
  uint8_t reason;    /* proto_reason */
} proto_relief;

typedef struct {
  uint16_t code; /* proto_error */
  uint32_t ref;  /* the message type or shrinker id concerned, or 0 */
  const char *text;
} proto_error_msg;

typedef struct {
  uint32_t request_id;
  uint32_t flags;     /* PROTO_CONTROL_MORE on replies */
  const char *text;   /* JSON text, NUL-terminated */
  uint32_t text_len;  /* strlen(text) */
} proto_control;

typedef struct {
  proto_msg_type type;
  union {
    proto_hello hello;
    proto_welcome welcome;
    proto_register reg;
    proto_unregister unreg;
    proto_estimate estimate;
    proto_shrink shrink;
    proto_shrink_done done;
    proto_relief relief;
    proto_error_msg error;
    proto_control control; /* CONTROL and CONTROL_REPLY */
  } u;
} proto_msg;

/*
 * Encodes @msg into @buf. Returns the message length (> 0), -EINVAL if a
 * field is out of range (bad type, level, reason, priority, deadline, a name
 * too long or empty, reserved flags set), or -EMSGSIZE if @buf_size is too
 * small. Never writes past @buf_size.
 */
ssize_t proto_encode(const proto_msg *msg, void *buf, size_t buf_size);

/*
 * Decodes and fully validates the packet in @buf of @len bytes into @out.
 * Returns 0, or -EBADMSG with *@err set to the reason (PROTO_ERR_*).
 * String and text pointers in @out point into @buf: valid while @buf is.
 * @err may be NULL.
 */
int proto_decode(const void *buf, size_t len, proto_msg *out, proto_error *err);

/* Static English name of a message type or error code, never NULL. */
const char *proto_msg_type_name(unsigned type);
const char *proto_error_name(unsigned code);
const char *proto_level_name(unsigned level);
const char *proto_reason_name(unsigned reason);

/*
 * Picks the version to speak with a peer offering [min, max]: the highest
 * both support. Returns it, or 0 if there is none.
 */
uint16_t proto_negotiate_version(uint16_t peer_min, uint16_t peer_max);

/*
 * Sends one encoded message on a SOCK_SEQPACKET socket with MSG_NOSIGNAL
 * (and MSG_DONTWAIT when @nonblock). Returns 0 or -errno (-EAGAIN when a
 * non-blocking send would block). Uses under 300 bytes of stack; only
 * CONTROL messages, which may be larger, are encoded on the heap.
 */
int proto_send(int fd, const proto_msg *msg, bool nonblock);

/*
 * Receives one packet into @buf (PROTO_MSG_MAX bytes) and decodes it.
 * Returns 0; -ECONNRESET on orderly end of stream; -EBADMSG with *@err set
 * when the packet is malformed or truncated; or another -errno (-EAGAIN on
 * a non-blocking socket with nothing to read).
 */
int proto_recv(int fd, void *buf, proto_msg *out, proto_error *err);
