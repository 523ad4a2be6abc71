"""A small Tk page the desktop tests drive: an entry, a button and a big label.

Run with the system python3 (python3-tk). It writes where its widgets are on the screen to <out>.geom
once mapped, and on every button click or Return in the entry appends the entry text to <out>.
"""
import json
import sys
import tkinter as tk

out = sys.argv[1]
root = tk.Tk()
root.title("sbx-tk")
root.geometry("420x260+120+140")
entry = tk.Entry(root, font=("DejaVu Sans", 14))
entry.place(x=10, y=10, width=300, height=34)
clicks = tk.IntVar(value=0)


def submit(_event=None):
    clicks.set(clicks.get() + 1)
    with open(out, "a") as f:
        f.write(entry.get() + "\n")


button = tk.Button(root, text="Submit", command=submit)
button.place(x=10, y=60, width=120, height=34)
entry.bind("<Return>", submit)
label = tk.Label(root, text="SANDBOXD OCR 42", font=("DejaVu Sans", 28, "bold"), bg="white", fg="black")
label.place(x=10, y=120)
label.bind("<Double-Button-1>", lambda _e: open(out, "a").write("double\n"))


def report():
    root.update_idletasks()
    geo = {name: [w.winfo_rootx(), w.winfo_rooty(), w.winfo_width(), w.winfo_height()]
           for name, w in (("entry", entry), ("button", button), ("label", label), ("root", root))}
    with open(out + ".geom", "w") as f:
        json.dump(geo, f)


root.after(300, report)
root.mainloop()
