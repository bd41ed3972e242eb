/*
 * render.h - `imagejobs render`: one image from the command line, no
 * service, no Redis or PostgreSQL. For people trying the generator and for
 * tests that need a PNG from the real binary.
 */
#ifndef IMAGEJOBS_CMD_RENDER_H
#define IMAGEJOBS_CMD_RENDER_H

/* argv[0] is "render". Prints the backend and the time per step on stdout;
 * returns the process exit status (0, 1 on failure, 2 on bad usage). */
int render_main(int argc, char **argv);

#endif
