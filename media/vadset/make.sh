#!/bin/sh
# Rebuilds the VAD quality set: short espeak-ng clips, 16 kHz mono 16-bit, leading and trailing
# silence trimmed (the test adds its own silence and noise). Deterministic for a given
# espeak-ng + sox version (here: espeak-ng 1.51, sox 14.4.2; `-D` turns off sox's random dither).
# Usage: sh make.sh   (from media/vadset/)
set -eu
clip() { # name voice speed pitch text
    espeak-ng -v "$2" -s "$3" -p "$4" -w raw.wav "$5"
    sox -D raw.wav -r 16000 -b 16 -c 1 "$1.wav" silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse
    rm -f raw.wav
}
clip us_m_160 en-us 160 50 "Could you book a table for two at seven tonight?"
clip gb_f_130 en-gb+f3 130 60 "The weather should clear up by the afternoon, I think."
clip us_f_200 en-us+f2 200 55 "Please send the invoice to my office address, not home."
clip de_m_120 de 120 40 "Guten Morgen, ich hätte gern einen Termin."
clip gb_m_175 en-gb 175 35 "No, that is not what I said. Let me explain it again."
clip us_m_140_quiet en-us+m3 140 45 "Hmm, well, maybe. I am not sure yet."
# The last clip is made 12 dB quieter to test quiet speech.
sox -D us_m_140_quiet.wav tmp.wav vol -12dB && mv tmp.wav us_m_140_quiet.wav
