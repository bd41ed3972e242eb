/*
 * keys.h - `imagejobs keys create|list|revoke`: API keys in PostgreSQL
 * (docs/security.md).
 */
#ifndef IMAGEJOBS_CMD_KEYS_H
#define IMAGEJOBS_CMD_KEYS_H

int keys_main(int argc, char **argv);

#endif
