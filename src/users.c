/*
 * users: the users_file of inbound AUTH (see users.h). Owns the parsed entries (name and
 * crypt hash, both copies) and the password check; no logging here: the caller reports
 * errors once, with the configuration file's location.
 */
#include "config.h"

#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "users.h"
#include "util.h"

/* The users file is small; a bigger one is a mistake (or not a users file). */
#define USERS_FILE_MAX (1024 * 1024)
/* crypt(3) output never exceeds this (libxcrypt's CRYPT_OUTPUT_SIZE, 384). */
#define USERS_HASH_MAX 383

/*
 * Compared against when the user is unknown, so that a wrong name costs as much as a
 * wrong password. Its password is irrelevant: an unknown user never matches.
 */
static const char users_dummy_hash[] =
    "$y$j9T$OlX14qWSqcCsTorV0gQWR1$56AWLo2Aiky2EYeajMkm5lNoAwzfGkNBRWLgUji8ktB";

struct users_entry {
	char *name;   /* owned */
	char *hash;   /* owned; "$y$..." or "$6$..." */
};

struct users {
	struct users_entry *v;  /* owned array */
	size_t n, cap;
};

/* Only the schemes we document: others (DES, MD5) are too weak to accept silently. */
static bool
users_hash_supported(const char *h)
{
	size_t len = strlen(h);

	if (strncmp(h, "$y$", 3) != 0 && strncmp(h, "$6$", 3) != 0)
		return false;
	if (len < 8 || len > USERS_HASH_MAX)
		return false;
	/* crypt's alphabet: ./0-9A-Za-z, '$' separators, and sha512-crypt's "rounds=N". */
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)h[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    c == '.' || c == '/' || c == '$' || c == '='))
			return false;
	}
	return true;
}

static bool
users_name_valid(const char *name, size_t len)
{
	if (len == 0 || len > USERS_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		/* Printable, no space: the name appears in log lines as one token. */
		if (c <= ' ' || c == 0x7f)
			return false;
	}
	return true;
}

static const struct users_entry *
users_find(const struct users *u, const char *name)
{
	for (size_t i = 0; i < u->n; i++)
		if (strcmp(u->v[i].name, name) == 0)
			return &u->v[i];
	return NULL;
}

/* One line without its end; 0, or -1 with *why set. */
static int
users_parse_line(struct users *u, char *line, const char **why)
{
	char *colon, *hash, *end;

	line[strcspn(line, "\r")] = '\0';
	line += strspn(line, " \t");
	end = line + strlen(line);
	while (end > line && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
	/* Comments are whole lines: '#' may be part of a user name. */
	if (*line == '\0' || *line == '#')
		return 0;
	if ((colon = strchr(line, ':')) == NULL) {
		*why = "expected \"user:hash\"";
		return -1;
	}
	*colon = '\0';
	hash = colon + 1;
	if (!users_name_valid(line, (size_t)(colon - line))) {
		*why = "bad user name (1 to 255 printable characters, no spaces)";
		return -1;
	}
	if (strchr(hash, ':') != NULL)
		hash[strcspn(hash, ":")] = '\0';  /* "user:hash:..." as in shadow(5): extra fields */
	if (!users_hash_supported(hash)) {
		*why = "unsupported password hash: use yescrypt ($y$, mkpasswd -m yescrypt) or "
		    "sha512-crypt ($6$, openssl passwd -6)";
		return -1;
	}
	if (users_find(u, line) != NULL) {
		*why = "user listed twice";
		return -1;
	}
	u->v = xgrow(u->v, sizeof(*u->v), u->n + 1, &u->cap);
	u->v[u->n].name = xstrdup(line);
	u->v[u->n].hash = xstrdup(hash);
	u->n++;
	return 0;
}

struct users *
users_parse(const char *text, char **err)
{
	struct users *u = xcalloc(1, sizeof(*u));
	char *copy = xstrdup(text), *line = copy;
	unsigned lineno = 0;

	while (line != NULL) {
		char *nl = strchr(line, '\n');
		const char *why = NULL;

		if (nl != NULL)
			*nl = '\0';
		lineno++;
		if (users_parse_line(u, line, &why) != 0) {
			*err = xasprintf("line %u: %s", lineno, why);
			users_free(u);
			u = NULL;
			break;
		}
		line = nl != NULL ? nl + 1 : NULL;
	}
	OPENSSL_cleanse(copy, strlen(text));
	free(copy);
	return u;
}

struct users *
users_load(const char *path, char **err)
{
	struct users *u;
	char *buf = xmalloc(USERS_FILE_MAX + 1);
	size_t n;
	FILE *fp;

	if ((fp = fopen(path, "re")) == NULL) {
		*err = xasprintf("cannot read %s: %s", path, strerror(errno));
		free(buf);
		return NULL;
	}
	n = fread(buf, 1, USERS_FILE_MAX, fp);
	buf[n] = '\0';
	if (ferror(fp) || !feof(fp)) {
		*err = xasprintf("cannot read %s whole (at most %d bytes)", path, USERS_FILE_MAX);
		u = NULL;
	} else if (strlen(buf) != n) {
		*err = xasprintf("%s: contains a NUL byte", path);
		u = NULL;
	} else
		u = users_parse(buf, err);
	fclose(fp);
	OPENSSL_cleanse(buf, n);
	free(buf);
	return u;
}

void
users_free(struct users *u)
{
	if (u == NULL)
		return;
	for (size_t i = 0; i < u->n; i++) {
		free(u->v[i].name);
		free(u->v[i].hash);
	}
	free(u->v);
	free(u);
}

size_t
users_count(const struct users *u)
{
	return u != NULL ? u->n : 0;
}

const char *
users_hash(const struct users *u, const char *user, bool *known)
{
	const struct users_entry *e = u != NULL ? users_find(u, user) : NULL;

	*known = e != NULL;
	return e != NULL ? e->hash : users_dummy_hash;
}

bool
users_hash_match(const char *hash, const char *pass)
{
	struct crypt_data *cd = xcalloc(1, sizeof(*cd));  /* ~32 KiB: not on the stack */
	const char *out;
	bool ok = false;

	out = crypt_rn(pass, hash, cd, (int)sizeof(*cd));
	/* Failure is NULL or a string starting with '*' (never a valid hash). */
	if (out != NULL && out[0] != '*' && strlen(out) == strlen(hash))
		ok = CRYPTO_memcmp(out, hash, strlen(hash)) == 0;
	OPENSSL_cleanse(cd, sizeof(*cd));
	free(cd);
	return ok;
}

bool
users_verify(const struct users *u, const char *user, const char *pass)
{
	bool known;
	const char *hash = users_hash(u, user, &known);

	/* Hash first, whatever known says: the unknown user pays the same. */
	return users_hash_match(hash, pass) && known;
}
