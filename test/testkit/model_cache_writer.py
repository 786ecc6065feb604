"""A Python writer of model_cache.db, behaving like the public EmProps nodes (db/init_db.py,
db/model_cache.py, stakeordie/emprops_comfy_nodes) where the agent meets them. Written from their
observed behaviour, not copied: a connection per call with sqlite3's default 5 s timeout, no
PRAGMAs, naive local `datetime.now().isoformat()` timestamps.

    python3 model_cache_writer.py init <db>                 init_db(): makedirs, tables, setting, seeds the
                                                            STATIC_MODELS json only when the file is new
    python3 model_cache_writer.py old-schema <db>           the 9-column table of init_db before 2025-05 / query_db.py
    python3 model_cache_writer.py register <db> <path> <model_type> [protected]
                                                            register_model (+ protected=1, as an operator sets it)
    python3 model_cache_writer.py touch <db> <path>         update_model_usage
    python3 model_cache_writer.py set-time <db> <path> <hours from now>
    python3 model_cache_writer.py lru <db>                  get_least_recently_used_models(100): JSON paths
    python3 model_cache_writer.py row <db> <path>           the row as JSON (or null)
"""
import datetime
import json
import os
import sqlite3
import sys


def now():
    return datetime.datetime.now().isoformat()


def connect(db):
    return sqlite3.connect(db)


def init(db):
    existed = os.path.exists(db)
    os.makedirs(os.path.dirname(db), exist_ok=True)
    conn = connect(db)
    cur = conn.cursor()
    cur.execute(
        "CREATE TABLE IF NOT EXISTS models (id INTEGER PRIMARY KEY, path TEXT UNIQUE, model_type TEXT, filename TEXT, "
        "size_bytes INTEGER, last_used TIMESTAMP, use_count INTEGER DEFAULT 0, download_date TIMESTAMP, "
        "protected BOOLEAN DEFAULT 0, is_ignore BOOLEAN DEFAULT 0)"
    )
    cur.execute("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT)")
    cur.execute("INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)", ("min_free_space_gb", "10"))
    if not existed:
        static = os.environ.get("STATIC_MODELS", "/workspace/shared/static-models.json")
        if os.path.exists(static):
            with open(static) as f:
                data = json.load(f)
            t = now()
            for model in data.get("no_index", []):
                path = model.get("path", "")
                if not path:
                    continue
                parts = path.split("/")
                model_type = parts[parts.index("models") + 1] if "models" in parts[:-1] else "unknown"
                size = os.path.getsize(path) if os.path.exists(path) else 0
                cur.execute(
                    "INSERT OR IGNORE INTO models (path, model_type, filename, size_bytes, last_used, use_count, "
                    "download_date, protected, is_ignore) VALUES (?, ?, ?, ?, ?, 0, ?, 1, 1)",
                    (path, model_type, os.path.basename(path), size, t, t),
                )
    conn.commit()
    conn.close()


def old_schema(db):
    os.makedirs(os.path.dirname(db), exist_ok=True)
    conn = connect(db)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS models (id INTEGER PRIMARY KEY, path TEXT UNIQUE, model_type TEXT, filename TEXT, "
        "size_bytes INTEGER, last_used TIMESTAMP, use_count INTEGER DEFAULT 0, download_date TIMESTAMP, protected BOOLEAN DEFAULT 0)"
    )
    conn.execute("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT OR IGNORE INTO settings (key, value) VALUES ('min_free_space_gb', '10')")
    conn.commit()
    conn.close()


def register(db, path, model_type, protected="0"):
    conn = connect(db)
    cur = conn.cursor()
    size = os.path.getsize(path) if os.path.exists(path) else 0
    t = now()
    cur.execute("SELECT id FROM models WHERE path = ?", (path,))
    if cur.fetchone():
        cur.execute("UPDATE models SET size_bytes = ?, last_used = ?, use_count = use_count + 1 WHERE path = ?", (size, t, path))
    else:
        cur.execute(
            "INSERT INTO models (path, model_type, filename, size_bytes, last_used, use_count, download_date, protected, is_ignore) "
            "VALUES (?, ?, ?, ?, ?, 1, ?, 0, 0)",
            (path, model_type, os.path.basename(path), size, t, t),
        )
    if protected == "1":
        cur.execute("UPDATE models SET protected = 1 WHERE path = ?", (path,))
    conn.commit()
    conn.close()


def touch(db, path):
    conn = connect(db)
    cur = conn.cursor()
    cur.execute("UPDATE models SET last_used = ?, use_count = use_count + 1 WHERE path = ?", (now(), path))
    conn.commit()
    conn.close()
    print(json.dumps(row_of(db, path)))


def set_time(db, path, hours):
    t = (datetime.datetime.now() + datetime.timedelta(hours=float(hours))).isoformat()
    conn = connect(db)
    conn.execute("UPDATE models SET last_used = ?, download_date = ? WHERE path = ?", (t, t, path))
    conn.commit()
    conn.close()


def lru(db):
    conn = connect(db)
    cur = conn.cursor()
    cur.execute(
        "SELECT path FROM models WHERE protected = 0 AND is_ignore = 0 ORDER BY last_used ASC LIMIT ?", (100,)
    )
    print(json.dumps([r[0] for r in cur.fetchall()]))
    conn.close()


def row_of(db, path):
    conn = connect(db)
    conn.row_factory = sqlite3.Row
    cur = conn.cursor()
    cur.execute("SELECT * FROM models WHERE path = ?", (path,))
    r = cur.fetchone()
    conn.close()
    return dict(r) if r else None


if __name__ == "__main__":
    command, db, *rest = sys.argv[1:]
    if command == "init":
        init(db)
    elif command == "old-schema":
        old_schema(db)
    elif command == "register":
        register(db, *rest)
    elif command == "touch":
        touch(db, *rest)
    elif command == "set-time":
        set_time(db, *rest)
    elif command == "lru":
        lru(db)
    elif command == "row":
        print(json.dumps(row_of(db, *rest)))
    else:
        sys.exit("unknown command " + command)
