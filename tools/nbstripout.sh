#!/bin/sh
# The repository's notebook filter, in one place for git, `make test` and `make strip`.
#
#   sh tools/nbstripout.sh --install          set git up to use it (make venv does this)
#   sh tools/nbstripout.sh                    git's clean filter: a notebook on stdin, stripped
#   sh tools/nbstripout.sh -t FILE            git's diff textconv: FILE as git would store it
#   sh tools/nbstripout.sh --verify FILES...  one line naming what to run if FILES hold outputs
#   sh tools/nbstripout.sh --strip FILES...   strip FILES in place (make strip)
#
# Git runs filters from the top of the work tree, so the relative .venv below is this clone's
# (each git worktree uses its own). Without a .venv (after `make clean`) the filter passes
# notebooks through unchanged instead of failing, so `git diff` and `git stash` keep working.
#
# JupyterLab writes the kernel's full language_info into a notebook it saves; nbstripout keeps
# metadata by default, so these keys are stripped as well (the stored notebooks keep "name").
EXTRA_KEYS="metadata.language_info.codemirror_mode metadata.language_info.file_extension
metadata.language_info.mimetype metadata.language_info.nbconvert_exporter
metadata.language_info.pygments_lexer metadata.language_info.version"

PYTHON=""
for bin in .venv/bin .venv/Scripts; do
    if [ -f "$bin/nbstripout" ] || [ -f "$bin/nbstripout.exe" ]; then
        PYTHON=$bin/python
        break
    fi
done

strip() {
    "$PYTHON" -m nbstripout --extra-keys "$EXTRA_KEYS" "$@"
}

case "${1-}" in
--install)
    # A checkout of an older commit may lack this script: then notebooks pass through as is.
    git config filter.nbstripout.clean \
        "sh -c '[ -f tools/nbstripout.sh ] && exec sh tools/nbstripout.sh; exec cat'"
    git config filter.nbstripout.smudge cat
    git config filter.nbstripout.required true
    git config diff.ipynb.textconv \
        "sh -c '[ -f tools/nbstripout.sh ] && exec sh tools/nbstripout.sh -t \"\$1\"; exec cat \"\$1\"' -"
    ;;
-t)
    if [ -n "$PYTHON" ]; then strip -t "$2"; else cat "$2"; fi
    ;;
--verify | --strip)
    if [ -z "$PYTHON" ]; then
        echo "no .venv with nbstripout here: run make venv" >&2
        exit 1
    fi
    mode=$1
    shift
    if [ "$mode" = --strip ]; then
        strip "$@"
        exit
    fi
    dirty=$(strip --dry-run "$@" | sed -n 's/^Dry run: would have stripped //p' | xargs echo)
    if [ -n "$dirty" ]; then
        echo "$dirty: saved with outputs or editor metadata (git stores it stripped); run: make strip" >&2
        exit 1
    fi
    ;;
*)
    if [ -n "$PYTHON" ]; then
        strip
    else
        echo "nbstripout: no .venv here (make venv makes it); notebook passed through unstripped" >&2
        cat
    fi
    ;;
esac
