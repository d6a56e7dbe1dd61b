/* SPDX-License-Identifier: MIT */
#include "errors.h"

G_DEFINE_QUARK(agent - error - quark, agent_error)
G_DEFINE_QUARK(agent - proto - error - quark, agent_proto_error)
