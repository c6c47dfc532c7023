import Chardev
