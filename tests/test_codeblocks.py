"""Code blocks of answers: parsing (kvchat.codeblocks), writing them to files
(`ask --save-code`, `chat --save-code`) and printing them (`kvchat code`)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest

from kvchat.codeblocks import CodeBlock, CodeBlockError, file_names, parse, save

TWO_BLOCKS = """Here is the program:

```python title=hello.py
import sys
print("hello from", sys.argv[0] if False else "python")
```

Run it with:

```bash
python hello.py
```
"""


# --- parsing ---------------------------------------------------------------

def test_backtick_and_tilde_fences_with_their_languages():
    blocks = parse("a\n```python\nx = 1\n```\nb\n~~~js\nlet y = 2;\n~~~\n")
    assert [(b.language, b.text, b.index, b.complete) for b in blocks] == [
        ("python", "x = 1\n", 1, True), ("js", "let y = 2;\n", 2, True),
    ]


def test_a_closing_fence_must_be_as_long_and_of_the_same_kind():
    text = "````md\n```py\nx\n```\n~~~~\n````\n"
    [block] = parse(text)
    assert block.language == "md"
    assert block.text == "```py\nx\n```\n~~~~\n"
    assert block.complete


def test_backticks_inside_a_tilde_fence_are_code():
    [block] = parse("~~~python\ns = '```'\nprint(s)\n```\n~~~\n")
    assert block.text == "s = '```'\nprint(s)\n```\n"


def test_fences_indented_up_to_three_spaces_lose_that_indentation():
    [block] = parse("   ```sh\n   echo hi\n     echo nested\n   ```\n")
    assert block.text == "echo hi\n  echo nested\n"
    # Four spaces make an indented code block, not a fence (CommonMark).
    assert parse("    ```sh\n    echo hi\n    ```\n") == []


def test_fences_in_list_items_and_quotes():
    text = "1. Install:\n\n    ```bash\n    pip install x\n    ```\n\n> ```py\n> print(1)\n> ```\n"
    assert [(b.language, b.text, b.complete) for b in parse(text)] == [
        ("bash", "pip install x\n", True), ("py", "print(1)\n", True),
    ]


@pytest.mark.parametrize(
    "info, language, filename",
    [
        ("python", "python", None),
        ("py title=app.py", "py", "app.py"),
        ("python:src/app.py", "python", "src/app.py"),
        ('filename="x.sh"', "sh", "x.sh"),
        ('js title="my app.js"', "js", "my app.js"),
        ("python app.py", "python", "app.py"),
        ("python 3.11", "python", None),
        ("app.py", "py", "app.py"),
        ("{.python}", "python", None),
        ("Dockerfile", "dockerfile", None),
        ("", None, None),
    ],
)
def test_info_strings(info, language, filename):
    [block] = parse(f"```{info}\ncode\n```\n")
    assert (block.language, block.filename) == (language, filename)


def test_an_unterminated_last_block_is_kept_and_marked_incomplete():
    blocks = parse("```py\nprint(1)\n```\n\n```py\ndef f(\n    return")
    assert [b.complete for b in blocks] == [True, False]
    assert blocks[1].text == "def f(\n    return"
    [empty] = parse("text\n```rust")
    assert (empty.language, empty.text, empty.complete) == ("rust", "", False)


def test_crlf_answers_and_cjk_comments():
    text = "说明：\r\n```python\r\n# 计算总和\r\nprint(sum([1, 2]))  # 输出 3\r\n```\r\n"
    [block] = parse(text)
    assert block.text == "# 计算总和\nprint(sum([1, 2]))  # 输出 3\n"
    assert block.complete and block.lines == 2


def test_no_blocks_and_inline_code_is_not_a_block():
    assert parse("Use `x[::-1]` or ``reversed()``.") == []


# --- file names ------------------------------------------------------------

def block(index: int, language: str | None, filename: str | None = None, text: str = "x\n") -> CodeBlock:
    return CodeBlock(language, filename, text, index, True)


def test_names_from_the_info_string_or_the_language():
    blocks = [
        block(1, "python"), block(2, "bash"), block(3, None), block(4, "dockerfile"), block(5, "kotlin"),
        block(6, "weird-lang"), block(7, "ts", "src/app.ts"), block(8, "makefile"), block(9, "c++"),
    ]
    assert file_names(blocks) == [
        "block-1.py", "block-2.sh", "block-3.txt", "Dockerfile", "block-5.kt",
        "block-6.txt", "src/app.ts", "Makefile", "block-9.cpp",
    ]


def test_names_are_unique_within_one_answer():
    blocks = [block(1, "py", "app.py"), block(2, "py", "App.py"), block(3, "py", "app.py"),
              block(4, "dockerfile"), block(5, "docker")]
    assert file_names(blocks) == ["app.py", "App-2.py", "app-3.py", "Dockerfile", "Dockerfile-2"]


@pytest.mark.parametrize("name", ["/etc/passwd", "../x.py", "a/../../x.py", "..\\x.py", "C:\\x.py", "\\\\host\\share\\x"])
def test_a_name_outside_the_directory_is_refused(name, tmp_path):
    with pytest.raises(CodeBlockError, match="outside the directory"):
        save([block(1, "py"), block(2, "py", name)], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_symbolic_link_out_of_the_directory_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(tmp_path)
    with pytest.raises(CodeBlockError, match="leads outside"):
        save([block(1, "py", "link/evil.py")], out)
    assert not (tmp_path / "evil.py").exists()


@pytest.mark.parametrize("name, error", [
    (".", "names '.', which is not a file"),
    ("src/", "names 'src/', which is not a file"),
    ("\x1b]0;title\x07t.py", "names a file with control characters"),
])
def test_a_name_that_is_no_file_or_holds_control_characters_is_refused(name, error, tmp_path):
    with pytest.raises(CodeBlockError, match=re.escape(error)):
        save([block(1, "py"), block(2, "py", name)], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_name_the_file_system_refuses_writes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "loop.py").symlink_to("loop.py")
    for blocks, why in [([block(1, "py", "ok.py"), block(2, "py", "b" * 300 + ".py")], "File name too long"),
                        ([block(1, "py", "ok.py"), block(2, "py", "loop.py")], "loop")]:
        with pytest.raises(CodeBlockError, match=f"cannot write .*{why}.*no file was written"):
            save(blocks, out)
        assert not (out / "ok.py").exists()


def test_a_link_to_nothing_is_a_file_in_the_way(tmp_path):
    (tmp_path / "d.py").symlink_to(tmp_path / "none.py")
    with pytest.raises(CodeBlockError, match=r"d\.py already exists.*--force"):
        save([block(1, "py", "d.py")], tmp_path)


# --- writing ---------------------------------------------------------------

def test_save_writes_every_block_in_created_directories(tmp_path):
    out = tmp_path / "a" / "b"
    paths = save(parse(TWO_BLOCKS.replace("title=hello.py", "title=src/hello.py")), out)
    assert paths == [out / "src" / "hello.py", out / "block-2.sh"]
    assert (out / "block-2.sh").read_text() == "python hello.py\n"
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_nothing_is_written_when_one_file_would_be_overwritten(tmp_path):
    (tmp_path / "block-2.sh").write_text("mine\n")
    with pytest.raises(CodeBlockError, match=r"block-2\.sh already exists.*--force"):
        save(parse(TWO_BLOCKS), tmp_path)
    assert not (tmp_path / "hello.py").exists()
    assert (tmp_path / "block-2.sh").read_text() == "mine\n"


def test_force_overwrites(tmp_path):
    (tmp_path / "block-2.sh").write_text("mine\n")
    save(parse(TWO_BLOCKS), tmp_path, force=True)
    assert (tmp_path / "block-2.sh").read_text() == "python hello.py\n"
    assert (tmp_path / "hello.py").exists()


def test_a_directory_in_the_way_is_refused(tmp_path):
    (tmp_path / "hello.py").mkdir()
    with pytest.raises(CodeBlockError, match="is a directory"):
        save(parse(TWO_BLOCKS), tmp_path, force=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(CodeBlockError, match="a file is in the way"):
        save(parse(TWO_BLOCKS), tmp_path / "file" / "sub")


# --- the CLI ---------------------------------------------------------------

def test_ask_save_code_writes_the_blocks_and_says_so(model, kvchat, tmp_path):
    model.queue_answer(TWO_BLOCKS)
    out = tmp_path / "code"
    done = kvchat("ask", "write hello", "--no-extract", "--save-code", str(out))
    assert done.exit_code == 0, done.stderr
    assert done.stdout == TWO_BLOCKS
    assert f"kvchat: saved 2 code blocks to {out}: hello.py, block-2.sh" in done.stderr
    assert (out / "hello.py").read_text().startswith("import sys\n")
    assert (out / "block-2.sh").read_text() == "python hello.py\n"

    model.queue_answer(TWO_BLOCKS)
    again = kvchat("ask", "once more", "--no-extract", "--save-code", str(out), "--json")
    assert again.exit_code == 1
    assert again.stderr.strip().splitlines()[-1] == (
        f"kvchat: error: hello.py, block-2.sh already exist in {out}; no file was written (--force overwrites)"
    )
    shown = json.loads(again.stdout)  # the answer still reaches a script
    assert shown["answer"] == TWO_BLOCKS and shown["saved"] == []
    assert shown["save_error"] == again.stderr.strip().splitlines()[-1].removeprefix("kvchat: error: ")

    model.queue_answer(TWO_BLOCKS.replace("hello from", "hi from"))
    forced = kvchat("ask", "and again", "--no-extract", "--save-code", str(out), "--json", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert json.loads(forced.stdout)["saved"] == [str(out / "hello.py"), str(out / "block-2.sh")]
    assert json.loads(forced.stdout)["save_error"] is None
    assert "hi from" in (out / "hello.py").read_text()
    assert "saved" not in forced.stderr  # --json carries the paths


def test_ask_save_code_skips_a_block_cut_off_with_the_answer(model, kvchat, tmp_path):
    model.queue_answer("```py\nprint(1)\n```\n```py\nprint(", finish_reason="length")
    done = kvchat("ask", "q", "--no-extract", "--save-code", str(tmp_path / "out"))
    assert done.exit_code == 0, done.stderr
    assert "code block 2 was cut off with the answer and is not saved" in done.stderr
    assert os.listdir(tmp_path / "out") == ["block-1.py"]


def test_ask_save_code_saves_a_last_block_a_whole_answer_left_unclosed(model, kvchat, tmp_path):
    """Small models often leave out the closing fence of their last block."""
    model.queue_answer("Here:\n```py\nprint(1)\n")
    done = kvchat("ask", "q", "--no-extract", "--save-code", str(tmp_path / "out"))
    assert done.exit_code == 0, done.stderr
    assert "kvchat: note: code block 1 has no closing fence; the answer ended whole, so it is saved" in done.stderr
    assert (tmp_path / "out" / "block-1.py").read_text() == "print(1)\n"
    assert "code block 1 is incomplete (it has no closing fence)" in kvchat("code").stderr
    # Not a block that ends inside a list item before the answer goes on, nor an empty one.
    for answer in ("1. Make it:\n   ```py\n   print(2)\n2. Then run it.\n", "Here:\n```py\n"):
        model.queue_answer(answer)
        done = kvchat("ask", "q", "--no-extract", "--save-code", str(tmp_path / "other"))
        assert done.exit_code == 0, done.stderr
        assert not (tmp_path / "other").exists() or os.listdir(tmp_path / "other") == []


def test_ask_save_code_refuses_a_path_outside(model, kvchat, tmp_path):
    model.queue_answer("```python:../evil.py\nprint(1)\n```\n")
    done = kvchat("ask", "q", "--no-extract", "--save-code", str(tmp_path / "out"))
    assert done.exit_code == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "kvchat: error: code block 1 names the file '../evil.py', which is outside the directory; "
        "no file was written"
    )
    assert not (tmp_path / "evil.py").exists()


def test_chat_save_code(model, kvchat, tmp_path):
    model.queue_answer("```sh\necho one\n```\n")
    model.queue_answer("```sh\necho two\n```\n")
    done = kvchat("chat", "--no-extract", "--save-code", str(tmp_path), input="first\nsecond\nexit\n")
    assert done.exit_code == 0, done.stderr
    assert "saved 1 code block to" in done.stderr
    # The second answer's block-1.sh would overwrite the first: refused, and the dialog goes on.
    assert "kvchat: error: block-1.sh already exists" in done.stderr
    assert (tmp_path / "block-1.sh").read_text() == "echo one\n"


def test_code_last_pipes_into_python(model, kvchat_process):
    program = "```python\n# 计算\nprint(sum(range(5)))\n```\n\nand\n\n~~~py\nprint('done')\n~~~\n"
    model.queue_answer("Here:\n\n" + program)
    assert kvchat_process("ask", "sum it", "--no-extract").exit_code == 0
    printed = kvchat_process("code", "--last")
    assert printed.exit_code == 0, printed.stderr
    assert printed.stdout == "# 计算\nprint(sum(range(5)))\n\nprint('done')\n"
    ran = subprocess.run([sys.executable], input=printed.stdout.encode(), capture_output=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.decode() == "10\ndone\n"


def test_code_index_list_json_and_turn_id(model, kvchat):
    model.queue_answer(TWO_BLOCKS)
    asked = json.loads(kvchat("ask", "q", "--no-extract", "--json").stdout)
    assert kvchat("code", "--index", "2").stdout == "python hello.py\n"
    assert kvchat("code", str(asked["answer_id"]), "-i", "2").stdout == "python hello.py\n"
    assert kvchat("code", "--list").stdout == "1\tpython\thello.py\t2\tcomplete\n2\tbash\tblock-2.sh\t1\tcomplete\n"
    shown = json.loads(kvchat("code", "--json").stdout)
    assert shown["turn_id"] == asked["answer_id"]
    assert shown["blocks"][0] == {
        "index": 1, "language": "python", "filename": "hello.py", "file": "hello.py", "lines": 2,
        "complete": True, "text": 'import sys\nprint("hello from", sys.argv[0] if False else "python")\n',
    }
    assert [b["file"] for b in shown["blocks"]] == ["hello.py", "block-2.sh"]


def error_of(done) -> str:
    assert done.exit_code == 1, done.stdout
    [line] = done.stderr.strip().splitlines()
    return line


def test_code_errors_are_one_line(model, kvchat):
    assert error_of(kvchat("code")) == "kvchat: error: no session named 'default' yet (see `kvchat sessions`)"
    model.queue_answer("No code here.")
    asked = json.loads(kvchat("ask", "q", "--no-extract", "--json").stdout)
    assert error_of(kvchat("code")) == f"kvchat: error: answer {asked['answer_id']} has no code blocks"
    assert error_of(kvchat("code", str(asked["question_id"]))) == (
        f"kvchat: error: turn {asked['question_id']} is a user turn, not an answer"
    )
    assert error_of(kvchat("code", "999999")).startswith("kvchat: error: no turn 999999")
    assert error_of(kvchat("code", "1", "--last")) == "kvchat: error: give a TURN_ID or --last, not both"
    model.queue_answer("```py\nx\n```\n")
    kvchat("ask", "q2", "--no-extract")
    assert error_of(kvchat("code", "--index", "3")).endswith("no code block 3: answer 4 has only one")
    assert error_of(kvchat("code", "--index", "0")).startswith("kvchat: error: no code block 0")
    assert error_of(kvchat("code", "-s", "other")) == "kvchat: error: no session named 'other' or starting with it (see `kvchat sessions`)"


def test_code_last_refuses_an_older_answer_after_a_failed_question(model, kvchat):
    model.queue_answer("```py\nprint('old')\n```\n")
    kvchat("ask", "q1", "--no-extract")
    model.queue_error(400, "bad request")
    assert kvchat("ask", "q2", "--no-extract").exit_code == 1
    assert error_of(kvchat("code", "--last")) == (
        "kvchat: error: the last question in session 'default' has no answer "
        "(`kvchat code TURN_ID` takes an earlier one)"
    )
    assert kvchat("code", "2").stdout == "print('old')\n"
